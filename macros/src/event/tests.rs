use quote::quote;

use super::expand_event;
use crate::test_support::{error, pretty};

fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
    pretty(expand_event(args, item).expect("expands"))
}

#[test]
fn default_name_and_version() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote!(
            pub struct OrderShipped {
                pub carrier: String,
            }
        )
    ));
}

#[test]
fn name_and_version() {
    insta::assert_snapshot!(expand(
        quote!(name = "Shipped", version = 4),
        quote!(
            pub struct OrderShipped {
                pub carrier: String,
            }
        )
    ));
}

#[test]
fn previous() {
    insta::assert_snapshot!(expand(
        quote!(version = 2, previous = OrderPlacedV1),
        quote!(
            pub struct OrderPlaced {
                pub id: String,
                pub currency: String,
            }
        )
    ));
}

#[test]
fn upcast_to() {
    insta::assert_snapshot!(expand(
        quote!(name = "OrderPlaced", version = 1, upcast_to = OrderPlaced),
        quote!(
            pub struct OrderPlacedV1 {
                pub id: String,
            }
        )
    ));
}

#[test]
fn upcast_with() {
    insta::assert_snapshot!(expand(
        quote!(
            name = "LinesAdded",
            upcast_to = LineAdded,
            upcast_with = split_lines
        ),
        quote!(
            pub struct LinesAddedV1 {
                pub lines: Vec<Line>,
            }
        )
    ));
}

#[test]
fn middle_of_a_chain() {
    insta::assert_snapshot!(expand(
        quote!(
            name = "OrderPlaced",
            version = 2,
            previous = OrderPlacedV1,
            upcast_to = OrderPlaced
        ),
        quote!(
            pub struct OrderPlacedV2 {
                pub id: String,
            }
        )
    ));
}

#[test]
fn upcast_json() {
    insta::assert_snapshot!(expand(
        quote!(
            version = 3,
            upcast_json(from = 2, with = v2_to_v3),
            upcast_json(from = 1, with = v1_to_v2)
        ),
        quote!(
            pub struct OrderPaid {
                pub cents: u64,
            }
        )
    ));
}

#[test]
fn every_argument_error_is_reported_at_once() {
    let message = error(expand_event(
        quote!(nmae = "X", version = 0, version = 2, upcast_with = f),
        quote!(
            pub struct OrderPlaced {}
        ),
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn not_on_an_enum() {
    let message = error(expand_event(
        quote!(),
        quote!(
            pub enum E {
                A,
            }
        ),
    ));
    assert_eq!(message, "`#[event]` goes on a struct, not on an enum");
}

#[test]
fn personal_fields() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote!(
            pub struct CustomerRegistered {
                pub customer_id: String,
                #[personal(subject = customer_id)]
                pub name: Personal<String>,
                #[serde(default)]
                #[personal(subject = customer_id)]
                pub r#address: Option<Personal<Address>>,
            }
        )
    ));
}

#[test]
fn personal_misuse_is_reported_at_once() {
    let message = error(expand_event(
        quote!(),
        quote!(
            #[serde(rename_all = "camelCase")]
            pub struct CustomerRegistered {
                #[personal(subject = name)]
                pub customer_id: String,
                #[personal(subject = customer_id)]
                pub name: Personal<String>,
                #[personal(subject = nobody)]
                #[personal(subject = customer_id)]
                pub address: Personal<String>,
                #[personal(subjcet = customer_id)]
                pub phone: Personal<String>,
            }
        ),
    ));
    insta::assert_snapshot!(message);
}
