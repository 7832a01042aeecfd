use quote::quote;

use super::expand_process_manager;
use crate::test_support::{error, pretty};

fn expand(args: proc_macro2::TokenStream, item: proc_macro2::TokenStream) -> String {
    pretty(expand_process_manager(args, item).expect("expands"))
}

#[test]
fn routes_and_return_shapes() {
    insta::assert_snapshot!(expand(
        quote!(name = "order_fulfillment"),
        quote! {
            impl Fulfillment {
                #[start(by = order_id)]
                fn placed(&self, state: &mut FulfillmentState, event: &OrderPlaced) -> Vec<FulfillmentCommand> { todo!() }
                #[start(by = order_id, strict)]
                fn reopened(&self, state: &mut FulfillmentState, event: &OrderReopened) -> Option<FulfillmentCommand> { todo!() }
                #[on(by = order_id)]
                fn reserved(&self, state: &mut FulfillmentState, event: &events::InventoryReserved, recorded: &RecordedEvent) -> Effects<FulfillmentCommand> { todo!() }
                #[on(by = order_id)]
                fn paid(&self, state: &mut FulfillmentState, event: &PaymentReceived) -> FulfillmentCommand { todo!() }
                #[stop(by = order_id)]
                fn shipped(&self, state: &mut FulfillmentState, event: &ShipmentCreated) {}
            }
        }
    ));
}

#[test]
fn fallible_handlers_and_hooks() {
    insta::assert_snapshot!(expand(
        quote!(name = "payments"),
        quote! {
            impl Payments {
                #[start(by = payment_id)]
                fn requested(&self, state: &mut PaymentState, event: &PaymentRequested) -> Result<Vec<PaymentCommand>, PaymentError> { todo!() }
                #[on(by = payment_id)]
                fn settled(&self, state: &mut PaymentState, event: &PaymentSettled) -> anyhow::Result<PaymentCommand> { todo!() }
                #[on_rejected]
                fn rejected(&self, state: &mut PaymentState, command: &PaymentCommand, error: &Rejection) -> Result<Option<PaymentCommand>, PaymentError> { todo!() }
                #[on_timeout]
                fn expired(&self, key: &str, state: &mut PaymentState, name: &str) -> Effects<PaymentCommand> { todo!() }
            }
        }
    ));
}

#[test]
fn explicit_state_and_command() {
    insta::assert_snapshot!(expand(
        quote!(
            name = "shipping",
            state = ShippingState,
            command = ShippingCommand
        ),
        quote! {
            impl Shipping {
                #[start(by = shipment_id)]
                fn created(&self, state: &mut ShippingState, event: &ShipmentCreated) -> Vec<BookCarrierV1> { todo!() }
                #[stop(by = shipment_id)]
                fn delivered(&self, state: &mut ShippingState, event: &ShipmentDelivered) -> Result<(), String> { todo!() }
            }
        }
    ));
}

#[test]
fn argument_errors_are_reported_at_once() {
    let message = error(expand_process_manager(
        quote!(nmae = "x", state = "State", command = Cmd, command = Cmd),
        quote! {
            impl<T> Generic<T> {
                #[start(by = id)]
                fn placed(&self, state: &mut State, _: &OrderPlaced) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn handler_errors_are_reported_at_once() {
    let message = error(expand_process_manager(
        quote!(name = "order_fulfillment"),
        quote! {
            impl Fulfillment {
                #[start]
                fn no_by(&self, state: &mut S, _: &A) {}
                #[start(by = "order_id")]
                fn string_by(&self, state: &mut S, _: &B) {}
                #[on(by = order_id, strict)]
                fn strict_continue(&self, state: &mut S, _: &C) {}
                #[stop(by = order_id)]
                #[on(by = order_id)]
                fn two_routes(&self, state: &mut S, _: &D) {}
                fn unrouted(&self, state: &mut S, _: &E) {}
                #[on(by = order_id)]
                async fn is_async(&self, state: &mut S, _: &F) {}
                #[on(by = order_id)]
                fn mut_self(&mut self, state: &mut S, _: &G) {}
                #[on(by = order_id)]
                fn shared_state(&self, state: &S, _: &H) {}
                #[on(by = order_id)]
                fn event_by_value(&self, state: &mut S, _: I) {}
                #[on(by = order_id)]
                fn no_state(&self, _: &J) {}
                #[on(by = order_id)]
                fn returns_a_tuple(&self, state: &mut S, _: &K) -> (Cmd, Cmd) { todo!() }
                #[on_rejected]
                fn rejected(&self, state: &mut S, command: Cmd) {}
                #[on_timeout(x)]
                fn timeout(&self, key: &str, state: &mut S, name: &str) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn rule_errors_are_reported_at_once() {
    let message = error(expand_process_manager(
        quote!(name = "order_fulfillment"),
        quote! {
            impl Fulfillment {
                #[on(by = order_id)]
                fn paid(&self, state: &mut S, _: &OrderPaid) -> Vec<PayCommand> { todo!() }
                #[on(by = order_id)]
                fn paid_again(&self, state: &mut S, _: &OrderPaid) -> Vec<ShipCommand> { todo!() }
                #[stop(by = order_id)]
                fn shipped(&self, state: &mut OtherState, _: &OrderShipped) {}
            }
        },
    ));
    insta::assert_snapshot!(message);
}

#[test]
fn stubs_infer_state_and_command_on_error() {
    let item = quote! {
        impl OrderFulfillment {
            #[start]
            fn placed(&self, _: &mut Fulfillment, _: &OrderPlaced) -> Result<Vec<FulfillmentCommand>, String> {
                Ok(Vec::new())
            }
        }
    };
    assert!(expand_process_manager(quote!(name = "f"), item.clone()).is_err());
    insta::assert_snapshot!(pretty(super::stubs(&quote!(name = "f"), &item)));
}

#[test]
fn stubs_take_explicit_state_and_command_on_error() {
    let item = quote! {
        impl OrderFulfillment {
            fn helper(&self) {}
        }
    };
    let args = quote!(
        name = "f",
        state = Fulfillment,
        command = FulfillmentCommand
    );
    assert!(expand_process_manager(args.clone(), item.clone()).is_err());
    insta::assert_snapshot!(pretty(super::stubs(&args, &item)));
}
