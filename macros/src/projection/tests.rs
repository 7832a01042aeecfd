use quote::quote;

use super::expand_projection;
use crate::test_support::{error, pretty};

fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
    pretty(expand_projection(args, item).expect("expands"))
}

#[test]
fn handlers() {
    insta::assert_snapshot!(expand(
        quote!(name = "order_list"),
        quote! {
            impl OrderList {
                async fn placed(&self, event: &OrderPlaced) -> Result<(), sqlx::Error> { todo!() }
                async fn shipped(&self, event: &events::OrderShipped, recorded: &RecordedEvent) {}
                async fn paid(&self, event: &PaymentReceived) -> () {}
                async fn noted(&self, event: &OrderNoted) -> std::io::Result<()> { todo!() }
            }
        }
    ));
}

#[test]
fn categories_and_reset() {
    insta::assert_snapshot!(expand(
        quote!(name = "revenue", categories = ["order", "payment"]),
        quote! {
            impl Revenue {
                async fn paid(&self, event: &PaymentReceived) -> Result<(), BoxError> { todo!() }
                #[reset]
                async fn clear(&self) -> Result<(), std::io::Error> { todo!() }
            }
        }
    ));
}

#[test]
fn infallible_reset() {
    insta::assert_snapshot!(expand(
        quote!(name = "count"),
        quote! {
            impl Count {
                async fn placed(&self, _: &OrderPlaced) {}
                #[reset]
                async fn reset(&self) {}
            }
        }
    ));
}

#[test]
fn transactional() {
    insta::assert_snapshot!(expand(
        quote!(name = "order_list", categories = ["order"], transactional),
        quote! {
            impl OrderList {
                async fn placed(&self, tx: &PgTransaction<'_>, event: &OrderPlaced) -> Result<(), tokio_postgres::Error> { todo!() }
                async fn shipped(&self, tx: &factum_postgres::PgTransaction<'_>, event: &OrderShipped, recorded: &RecordedEvent) {}
                #[reset]
                async fn clear(&self, tx: &PgTransaction<'_>) -> Result<(), BoxError> { todo!() }
            }
        }
    ));
}

#[test]
fn transactional_errors_are_reported_at_once() {
    let message = error(expand_projection(
        quote!(name = "order_list", transactional = true),
        quote! {
            impl OrderList {
                async fn no_tx(&self, event: &OrderPlaced) {}
                async fn tx_by_value(&self, tx: PgTransaction<'_>, event: &OrderShipped) {}
                #[reset]
                async fn clear(&self) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
    let message = error(expand_projection(
        quote!(name = "order_list"),
        quote! {
            impl OrderList {
                async fn placed(&self, tx: &tokio_postgres::Transaction<'_>, event: &OrderPlaced) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn transactional_handlers_take_the_store_transaction() {
    let message = error(expand_projection(
        quote!(name = "order_list", transactional),
        quote! {
            impl OrderList {
                async fn placed(&self, tx: &tokio_postgres::Transaction<'_>, event: &OrderPlaced) {}
                #[reset]
                async fn clear(&self, tx: &Transaction<'_>) {}
            }
        },
    ));
    assert_eq!(
        message,
        "projection handler `placed` of a `transactional` projection takes `&factum_postgres::PgTransaction<'_>`, not `&Transaction<'_>`: it dereferences to `tokio_postgres::Transaction`, sets the store's schema as the `search_path` and prepares each SQL text once per transaction\n\
         `#[reset]` method `clear` of a `transactional` projection takes `&factum_postgres::PgTransaction<'_>`, not `&Transaction<'_>`: it dereferences to `tokio_postgres::Transaction`, sets the store's schema as the `search_path` and prepares each SQL text once per transaction"
    );
}

#[test]
fn argument_errors_are_reported_at_once() {
    let message = error(expand_projection(
        quote!(nmae = "x", categories = "order", categories = ["bad-one"]),
        quote! {
            impl<T> Generic<T> {
                async fn placed(&self, _: &OrderPlaced) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn handler_errors_are_reported_at_once() {
    let message = error(expand_projection(
        quote!(name = "order_list"),
        quote! {
            impl OrderList {
                fn not_async(&self, _: &OrderPlaced) {}
                async fn by_value(&self, _: OrderShipped) {}
                async fn mut_self(&mut self, _: &OrderPaid) {}
                async fn too_many(&self, _: &OrderCancelled, _: &RecordedEvent, _: u32) {}
                async fn returns_bool(&self, _: &OrderNoted) -> bool { true }
                #[reset]
                async fn reset(&self, all: bool) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn not_on_a_struct() {
    let message = error(expand_projection(
        quote!(name = "x"),
        quote!(
            struct OrderList;
        ),
    ));
    assert_eq!(
        message,
        "`#[projection]` goes on the `impl` block of a read model, not on a struct"
    );
}

#[test]
fn skip_unknown_versions() {
    insta::assert_snapshot!(expand(
        quote!(name = "order_count", skip_unknown_versions),
        quote! {
            impl OrderCount {
                async fn placed(&self, _: &OrderPlaced) {}
            }
        }
    ));
}

#[test]
fn skip_unknown_versions_takes_no_value() {
    let message = error(expand_projection(
        quote!(name = "order_count", skip_unknown_versions = true),
        quote! {
            impl OrderCount {
                async fn placed(&self, _: &OrderPlaced) {}
            }
        },
    ));
    assert_eq!(
        message,
        "`skip_unknown_versions` takes no value: write `#[projection(name = \"...\", skip_unknown_versions)]`, or leave it out to fail on unknown versions"
    );
}

#[test]
fn stubs_on_error() {
    let item = quote! {
        impl OrderList {
            fn placed(&self, _: &OrderPlaced) {}
        }
    };
    let args = quote!(name = "order_list");
    assert!(expand_projection(args.clone(), item.clone()).is_err());
    insta::assert_snapshot!(pretty(super::stubs(&args, &item)));
}

#[test]
fn transactional_stubs_on_error() {
    let item = quote! {
        impl OrderList {
            async fn placed(&self, _: &OrderPlaced) {}
        }
    };
    let args = quote!(name = "order_list", transactional);
    assert!(expand_projection(args.clone(), item.clone()).is_err());
    insta::assert_snapshot!(pretty(super::stubs(&args, &item)));
}
