//! Code generation for `#[process_manager]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::check::Checked;
use super::parse::{Handler, Hook, RouteKind};
use super::signature::{Returns, Shape};

pub(super) fn expand(checked: &Checked) -> TokenStream {
    let input = &checked.input;
    let item = &input.item;
    let self_ty = &item.self_ty;
    let name = &input.name;
    let state = &checked.state;
    let command = &checked.command;
    let histories: Vec<TokenStream> = input
        .handlers
        .iter()
        .map(|h| {
            let ty = &h.event;
            quote_spanned!(ty.span()=> <#ty as ::factum::__private::EventSchema>::HISTORY)
        })
        .collect();
    let duplicate = format!(
        "two event types handled by process manager `{}` read the same stored name and version: handle each stored version through one type",
        name.value()
    );
    let routes = input.handlers.iter().map(|h| route(h, name));
    let handles = input.handlers.iter().map(|h| handle(h, name, command));
    let on_rejected = input.on_rejected.as_ref().map(|hook| {
        let call = hook_call(hook, quote!(self, __state, __command, __error));
        let effects = effects(&hook.returns, command, call);
        quote! {
            fn on_rejected(
                &self,
                __state: &mut #state,
                __command: &#command,
                __error: &::factum::__private::Rejection,
            ) -> ::core::result::Result<::factum::Effects<#command>, ::factum::BoxError> {
                ::core::result::Result::Ok(#effects)
            }
        }
    });
    let on_timeout = input.on_timeout.as_ref().map(|hook| {
        let call = hook_call(hook, quote!(self, __key, __state, __name));
        let effects = effects(&hook.returns, command, call);
        quote! {
            fn on_timeout(
                &self,
                __key: &str,
                __state: &mut #state,
                __name: &str,
            ) -> ::core::result::Result<::factum::Effects<#command>, ::factum::BoxError> {
                ::core::result::Result::Ok(#effects)
            }
        }
    });
    quote! {
        #item

        const _: () = ::core::assert!(
            ::factum::__private::distinct_entries(&[#(#histories),*]),
            #duplicate,
        );

        #[automatically_derived]
        impl ::factum::ProcessManager for #self_ty {
            type State = #state;
            type Command = #command;

            fn name(&self) -> &str {
                #name
            }

            fn event_types(&self) -> ::factum::__private::Vec<::factum::__private::String> {
                ::factum::__private::event_type_names(&[#(#histories),*])
            }

            fn route(
                &self,
                __event: &::factum::RecordedEvent,
            ) -> ::core::result::Result<::factum::__private::Route, ::factum::BoxError> {
                #(#routes)*
                ::factum::__private::unhandled_route(#name, &[#(#histories),*], __event)
            }

            fn handle(
                &self,
                __state: &mut #state,
                __event: &::factum::RecordedEvent,
            ) -> ::core::result::Result<::factum::Effects<#command>, ::factum::BoxError> {
                #(#handles)*
                ::core::result::Result::Ok(::factum::Effects::none())
            }

            #on_rejected
            #on_timeout
        }
    }
}

/// `<Event as EventSchema>::decode_history(...)` on the recorded event.
fn decode(ty: &syn::TypePath) -> TokenStream {
    quote_spanned! {ty.span()=>
        <#ty as ::factum::__private::EventSchema>::decode_history(
            &__event.event_type,
            __event.schema_version,
            &__event.payload,
        )
    }
}

/// Routes by the key field of the first decoded event (an upcast may split one stored event
/// into several, which all go to that instance); an event that does not decode is an error,
/// which stops the process manager at it.
fn route(handler: &Handler, name: &syn::LitStr) -> TokenStream {
    let decode = decode(&handler.event);
    let by = &handler.by;
    let variant = match handler.route {
        RouteKind::Start => quote!(Start),
        RouteKind::StartStrict => quote!(StartStrict),
        RouteKind::Continue => quote!(Continue),
        RouteKind::Stop => quote!(Stop),
    };
    let key = quote_spanned! {by.span()=>
        ::factum::__private::CorrelationKey::correlation_key(&__first.#by)
    };
    quote! {
        if let ::core::option::Option::Some(__decoded) = #decode {
            return match __decoded {
                ::core::result::Result::Ok(__decoded) => {
                    match ::core::iter::Iterator::next(
                        &mut ::core::iter::IntoIterator::into_iter(__decoded),
                    ) {
                        ::core::option::Option::Some(__first) => {
                            ::core::result::Result::Ok(::factum::__private::Route::#variant(#key))
                        }
                        ::core::option::Option::None => {
                            ::core::result::Result::Ok(::factum::__private::Route::Ignore)
                        }
                    }
                }
                ::core::result::Result::Err(__error) => ::core::result::Result::Err(
                    ::factum::__private::decode_failed(#name, __event, __error),
                ),
            };
        }
    }
}

/// Decodes and calls the handler once per decoded event, merging the effects.
fn handle(handler: &Handler, name: &syn::LitStr, command: &syn::Type) -> TokenStream {
    let decode = decode(&handler.event);
    let method = &handler.method;
    let state = quote_spanned!(handler.state.span()=> __state);
    let recorded = handler
        .recorded
        .as_ref()
        .map(|ty| quote_spanned!(ty.span()=> , __event));
    let call = quote!(Self::#method(self, #state, &__decoded #recorded));
    let effects = effects(&handler.returns, command, call);
    quote! {
        if let ::core::option::Option::Some(__decoded) = #decode {
            let __decoded = match __decoded {
                ::core::result::Result::Ok(__decoded) => __decoded,
                ::core::result::Result::Err(__error) => {
                    return ::core::result::Result::Err(
                        ::factum::__private::decode_failed(#name, __event, __error),
                    );
                }
            };
            let mut __effects = ::factum::Effects::none();
            for __decoded in __decoded {
                ::factum::__private::merge_effects(&mut __effects, #effects);
            }
            return ::core::result::Result::Ok(__effects);
        }
    }
}

fn hook_call(hook: &Hook, args: TokenStream) -> TokenStream {
    let method = &hook.method;
    quote!(Self::#method(#args))
}

/// Turns a call's value into `Effects<Command>`, returning its error from the enclosing
/// function.
fn effects(returns: &Returns, command: &syn::Type, call: TokenStream) -> TokenStream {
    let span = returns.span;
    let value = if returns.fallible {
        quote_spanned! {span=>
            match #call {
                ::core::result::Result::Ok(__value) => __value,
                ::core::result::Result::Err(__error) => {
                    return ::core::result::Result::Err(
                        ::factum::__private::handler_error(__error),
                    );
                }
            }
        }
    } else {
        call
    };
    let convert = |helper: TokenStream, ty: &syn::Type| {
        quote_spanned! {ty.span()=>
            ::factum::__private::#helper::<#ty, #command>(#value)
        }
    };
    match &returns.shape {
        Shape::Nothing => quote_spanned! {span=> {
            let () = #value;
            ::factum::Effects::<#command>::none()
        }},
        Shape::Effects(ty) => convert(quote!(effects_from), ty),
        Shape::Vec(ty) => convert(quote!(effects_from_vec), ty),
        Shape::Option(ty) => convert(quote!(effects_from_option), ty),
        Shape::One(ty) => convert(quote!(effects_from_one), ty),
    }
}
