use quote::quote;

use super::expand_command;
use crate::test_support::{error, pretty};

fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
    pretty(expand_command(args, item).expect("expands"))
}

#[test]
fn version_from_the_suffix() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote!(
            pub struct PlaceOrderV2 {
                pub customer_id: String,
            }
        )
    ));
}

#[test]
fn no_suffix_is_version_1() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote!(
            pub struct Ping;
        )
    ));
}

#[test]
fn name_and_version() {
    insta::assert_snapshot!(expand(
        quote!(name = "Checkout", version = 3),
        quote!(
            pub struct CheckoutOrder {}
        )
    ));
}

#[test]
fn id_field() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote!(
            pub struct ShipOrderV1 {
                #[id]
                pub order_id: String,
                pub carrier: String,
            }
        )
    ));
}

#[test]
fn id_in_a_tuple_struct() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote!(
            pub struct CancelOrderV1(pub String, #[id] pub String);
        )
    ));
}

#[test]
fn validate() {
    insta::assert_snapshot!(expand(
        quote!(validate = checks::positive),
        quote!(
            pub struct WithdrawV1 {
                pub amount: u64,
            }
        )
    ));
}

#[test]
fn errors() {
    let message = error(expand_command(
        quote!(version = 2, validate = "f"),
        quote!(
            pub struct PlaceOrderV1 {
                #[id]
                a: String,
                #[id]
                b: String,
            }
        ),
    ));
    insta::assert_snapshot!(message);
    let message = error(expand_command(
        quote!(version = 2),
        quote!(
            pub struct PlaceOrderV1;
        ),
    ));
    assert_eq!(
        message,
        "`version = 2` contradicts the `V1` suffix of `PlaceOrderV1`"
    );
}

#[test]
fn enum_of_commands() {
    insta::assert_snapshot!(expand(
        quote!(),
        quote!(
            #[derive(Clone)]
            pub enum FulfillmentCommand {
                Reserve(ReserveStockV1),
                Cancel(CancelOrderV1),
            }
        )
    ));
}

#[test]
fn enum_errors() {
    insta::assert_snapshot!(error(expand_command(
        quote!(version = 2),
        quote!(
            pub enum Steps<T> {
                Unit,
                Named { command: T },
                Two(A, B),
            }
        )
    )));
}
