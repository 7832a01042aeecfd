use quote::quote;

use super::expand_aggregate;
use crate::test_support::{error, pretty};

fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
    pretty(expand_aggregate(args, item).expect("expands"))
}

#[test]
fn struct_with_category_only() {
    insta::assert_snapshot!(expand(
        quote!(category = "account"),
        quote!(
            #[derive(Default)]
            pub struct Account {
                balance: u64,
            }
        )
    ));
}

#[test]
fn struct_with_snapshots_and_state_version() {
    insta::assert_snapshot!(expand(
        quote!(category = "order", snapshot_every = 100, state_version = 2),
        quote!(
            #[derive(Default)]
            pub struct Order {
                placed: bool,
            }
        )
    ));
}

#[test]
fn impl_with_every_return_shape() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote! {
            impl Order {
                #[handle]
                fn place(&self, cmd: PlaceOrderV1) -> Result<OrderPlaced, OrderError> { todo!() }
                #[handle]
                fn add(&self, cmd: AddLinesV1) -> Result<Vec<LineAdded>, OrderError> { todo!() }
                #[handle]
                fn ship(&self, _: ShipOrderV1) -> Result<Option<OrderShipped>, OrderError> { todo!() }
                #[handle]
                fn checkout(&self, _: CheckoutV1) -> Result<(OrderPaid, OrderShipped), OrderError> { todo!() }
                #[handle]
                fn cancel(&self, _: CancelOrderV1) -> Result<Vec<OrderEvent>, OrderError> { todo!() }
                #[handle]
                fn confirm(&self, _: ConfirmV1) -> Result<(), OrderError> { todo!() }
                #[handle]
                fn note(&self, _: NoteV1) -> Result<Option<OrderEvent>, OrderError> { todo!() }
                fn helper(&self) -> bool { true }
                #[apply]
                fn placed(&mut self, _: &OrderPlaced) {}
                #[apply]
                fn added(&mut self, _: &LineAdded) {}
                #[apply]
                fn shipped(&mut self, _: &OrderShipped) {}
                #[apply]
                fn paid(&mut self, _: &events::OrderPaid) {}
            }
        }
    ));
}

#[test]
fn impl_with_error_and_vis() {
    insta::assert_snapshot!(expand(
        quote!(error = AccountError, vis = pub(crate)),
        quote! {
            impl Account {
                #[handle]
                fn deposit(&self, cmd: DepositV1) -> Result<Deposited, Infallible> { todo!() }
                #[handle]
                fn withdraw(&self, cmd: WithdrawV1) -> Result<AccountEvent, AccountError> { todo!() }
                #[apply]
                fn deposited(&mut self, _: &Deposited) {}
            }
        }
    ));
}

#[test]
fn every_handler_error_is_reported_at_once() {
    let message = error(expand_aggregate(
        quote!(),
        quote! {
            impl Order {
                #[handle]
                fn place(&mut self, _: &PlaceOrderV1) -> OrderPlaced { todo!() }
                #[handle]
                fn ship(&self, _: ShipOrderV1) -> Result<OrderShipped, OrderError> { todo!() }
                #[handle]
                fn ship_again(&self, _: ShipOrderV1) -> Result<Vec<OrderShipped>, OrderError> { todo!() }
                #[apply]
                fn placed(&self, _: OrderPlaced) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn struct_errors() {
    let message = error(expand_aggregate(
        quote!(snapshot_every = 0, error = E, colour = "red"),
        quote!(
            pub struct Order<T> {
                t: T,
            }
        ),
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn stubs_of_an_impl_on_error() {
    let item = quote! {
        impl Order {
            #[handle]
            fn place(&self, _: PlaceOrder) -> Result<OrderPlaced, OrderError> {
                Ok(OrderPlaced {})
            }

            #[handle]
            fn cancel(&self, _: &CancelOrder) -> Result<(), OrderError> {
                Ok(())
            }

            #[handle]
            fn cancel_again(&self, _: CancelOrder) -> Result<(), OrderError> {
                Ok(())
            }

            #[apply]
            fn placed(&mut self, _: &OrderPlaced) {}
        }
    };
    let args = quote!(vis = pub(crate));
    assert!(expand_aggregate(args.clone(), item.clone()).is_err());
    insta::assert_snapshot!(pretty(super::stubs(&args, &item)));
}

#[test]
fn stubs_of_a_struct_on_error() {
    let item = quote!(
        pub struct Order {}
    );
    let args = quote!(category = 1);
    assert!(expand_aggregate(args.clone(), item.clone()).is_err());
    insta::assert_snapshot!(pretty(super::stubs(&args, &item)));
}

#[test]
fn no_stubs_for_a_generic_impl() {
    let item = quote!(
        impl<T> Order<T> {}
    );
    assert!(super::stubs(&quote!(), &item).is_empty());
}
