//! Code generation for `#[projection]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::parse::{Handler, Input, Returns};

pub(super) fn expand(input: &Input) -> TokenStream {
    let item = &input.item;
    let self_ty = &item.self_ty;
    let name = &input.name;
    let histories: Vec<TokenStream> = input
        .handlers
        .iter()
        .map(|h| {
            let ty = &h.event;
            quote_spanned!(ty.span()=> <#ty as ::factum::__private::EventSchema>::HISTORY)
        })
        .collect();
    let duplicate = format!(
        "two event types handled by projection `{}` read the same stored name and version: handle each stored version through one type",
        name.value()
    );
    let categories = (!input.categories.is_empty()).then(|| {
        let categories = &input.categories;
        quote! {
            fn categories(&self) -> ::factum::__private::Vec<::factum::__private::String> {
                ::factum::__private::vec![
                    #(::core::convert::From::from(#categories)),*
                ]
            }
        }
    });
    let arms = input.handlers.iter().map(|h| dispatch(h, name));
    // A stored name that a handled type reads, at a version none of them reads: an error
    // through the failure policy, or skipped when the projection opts in.
    let unknown_versions = if input.skip_unknown_versions {
        quote!(Skip)
    } else {
        quote!(Fail)
    };
    // A transactional projection implements `factum_postgres::PgProjection`, whose methods
    // also take the transaction; the only place generated code names `::factum_postgres`.
    let (projection_trait, tx_param) = if input.transactional {
        (
            quote!(::factum_postgres::PgProjection),
            quote!(__tx: &::factum_postgres::PgTransaction<'_>,),
        )
    } else {
        (quote!(::factum::Projection), TokenStream::new())
    };
    let reset = input.reset.as_ref().map(|reset| {
        let method = &reset.method;
        let tx = tx_arg(reset.tx.as_ref());
        let body = outcome(&reset.returns, quote!(Self::#method(self #tx).await));
        quote! {
            async fn reset(
                &self,
                #tx_param
            ) -> ::core::result::Result<(), ::factum::BoxError> {
                #body
                ::core::result::Result::Ok(())
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
        impl #projection_trait for #self_ty {
            fn name(&self) -> &str {
                #name
            }

            fn event_types(&self) -> ::factum::__private::Vec<::factum::__private::String> {
                ::factum::__private::event_type_names(&[#(#histories),*])
            }

            #categories

            async fn handle(
                &self,
                #tx_param
                __event: &::factum::RecordedEvent,
            ) -> ::core::result::Result<(), ::factum::BoxError> {
                #(#arms)*
                ::factum::__private::unhandled_event(
                    #name,
                    &[#(#histories),*],
                    __event,
                    ::factum::__private::UnknownVersions::#unknown_versions,
                )
            }

            #reset
        }
    }
}

/// `, __tx` spanned on the method's transaction argument, when it has one (so that a wrong
/// type is reported there).
fn tx_arg(ty: Option<&syn::Type>) -> Option<TokenStream> {
    ty.map(|ty| quote_spanned!(ty.span()=> , __tx))
}

/// Runs a handler call, returning its error from the enclosing function.
fn outcome(returns: &Returns, call: TokenStream) -> TokenStream {
    match returns {
        Returns::Unit => quote!(let () = #call;),
        Returns::Result(span) => quote_spanned! {*span=>
            if let ::core::result::Result::Err(__error) = #call {
                return ::core::result::Result::Err(::factum::__private::handler_error(__error));
            }
        },
    }
}

/// Decodes the event when its stored name and version are in the handler's type's history,
/// then calls the handler once per decoded event (an upcast may split one into several).
fn dispatch(handler: &Handler, name: &syn::LitStr) -> TokenStream {
    let ty = &handler.event;
    let method = &handler.method;
    let recorded = handler
        .recorded
        .as_ref()
        .map(|ty| quote_spanned!(ty.span()=> , __event));
    let tx = tx_arg(handler.tx.as_ref());
    let body = outcome(
        &handler.returns,
        quote!(Self::#method(self #tx, &__decoded #recorded).await),
    );
    let decode = quote_spanned! {ty.span()=>
        <#ty as ::factum::__private::EventSchema>::decode_history(
            &__event.event_type,
            __event.schema_version,
            &__event.payload,
        )
    };
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
            for __decoded in __decoded {
                #body
            }
            return ::core::result::Result::Ok(());
        }
    }
}
