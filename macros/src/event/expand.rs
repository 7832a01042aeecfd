//! Code generation for `#[event]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;

use super::parse::Input;

pub(super) fn expand(input: &Input) -> TokenStream {
    let item = &input.item;
    let ident = &item.ident;
    let name = input.name();
    let version = input.version();
    let schema = expand_schema(input, &name, version);
    let event = if input.args.upcast_to.is_some() {
        expand_upcast(input)
    } else {
        quote_spanned! {ident.span()=>
            #[automatically_derived]
            impl ::factum::Event for #ident {
                const NAME: &'static str = #name;
                const VERSION: u32 = #version;

                fn decode_stored(
                    __version: u32,
                    __payload: &::factum::__private::Payload,
                ) -> ::core::result::Result<::factum::__private::Decoded<Self>, ::factum::__private::DecodeError> {
                    ::factum::__private::decode_stored::<Self>(__version, __payload)
                }
            }
        }
    };
    let previous = input.args.previous.as_ref().map(|previous| {
        let message = format!(
            "`previous = {}` must have a lower version than `{ident}`, exactly one lower under the same name",
            quote!(#previous).to_string().replace(' ', "")
        );
        quote_spanned! {previous.span()=>
            #[automatically_derived]
            impl ::factum::__private::Follows<#previous> for #ident {}

            const _: () = ::core::assert!(
                ::factum::__private::follows(
                    (
                        <#previous as ::factum::__private::EventSchema>::NAME,
                        <#previous as ::factum::__private::EventSchema>::VERSION,
                    ),
                    (#name, #version),
                ),
                #message,
            );
        }
    });
    let personal = expand_personal(input);
    quote! {
        #item
        #schema
        #event
        #previous
        #personal
    }
}

/// The `PersonalData` impl of an event with `#[personal]` fields, and a check that each of
/// them is a `Personal<T>` of a serializable `T`.
fn expand_personal(input: &Input) -> Option<TokenStream> {
    if input.personal.is_empty() {
        return None;
    }
    let ident = &input.item.ident;
    let fields = input.personal.iter().map(|p| {
        let field = p.ident.unraw().to_string();
        let subject = p.subject.unraw().to_string();
        quote!(::factum::__private::PersonalField::new(#field, #subject))
    });
    let checks = input.personal.iter().map(|p| {
        let ty = &p.ty;
        quote_spanned! {ty.span()=>
            let _ = ::factum::__private::assert_personal_value::<#ty>;
        }
    });
    Some(quote! {
        #[automatically_derived]
        impl ::factum::__private::PersonalData for #ident {
            const PERSONAL: &'static [::factum::__private::PersonalField] = &[#(#fields),*];
        }

        const _: () = {
            #(#checks)*
        };
    })
}

/// The hidden `EventSchema` impl: history and decoding through the chain.
fn expand_schema(input: &Input, name: &str, version: u32) -> TokenStream {
    let ident = &input.item.ident;
    let mut steps: Vec<_> = input.args.upcast_json.iter().collect();
    steps.sort_by_key(|s| s.from);
    let json_versions = steps.iter().rev().map(|s| s.from);
    let json_len = steps.len();
    let (history_len, previous_history) = match &input.args.previous {
        Some(previous) => (
            quote!(1 + #json_len + <#previous as ::factum::__private::EventSchema>::HISTORY.len()),
            quote!(<#previous as ::factum::__private::EventSchema>::HISTORY),
        ),
        None => (quote!(1 + #json_len), quote!(&[])),
    };
    let json = steps.first().map(|first| {
        let first = first.from;
        let fns = steps.iter().map(|s| {
            let with = &s.with;
            quote_spanned! {with.span()=>
                |__value| ::factum::__private::json_result(#with(__value))
            }
        });
        quote! {
            if let ::core::option::Option::Some(__decoded) =
                ::factum::__private::decode_json::<Self>(
                    __name,
                    __version,
                    #first,
                    &[#(#fns),*],
                    __payload,
                )
            {
                return ::core::option::Option::Some(__decoded);
            }
        }
    });
    let older = match &input.args.previous {
        Some(previous) => quote_spanned! {previous.span()=>
            ::factum::__private::upcast::<#previous, Self>(
                <#previous as ::factum::__private::EventSchema>::decode_history(
                    __name, __version, __payload,
                ),
            )
        },
        None => quote!(::core::option::Option::None),
    };
    quote! {
        #[automatically_derived]
        impl ::factum::__private::EventSchema for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            const HISTORY: &'static [::factum::__private::HistoryEntry] =
                &::factum::__private::history::<{ #history_len }>(
                    (#name, #version),
                    &[#(#json_versions),*],
                    #previous_history,
                );

            fn decode_history(
                __name: &str,
                __version: u32,
                __payload: &::factum::__private::Payload,
            ) -> ::core::option::Option<
                ::core::result::Result<::factum::__private::Decoded<Self>, ::factum::__private::DecodeError>,
            > {
                if __name == #name {
                    if __version == #version {
                        return ::core::option::Option::Some(
                            ::factum::__private::decode_payload(__name, __version, __payload),
                        );
                    }
                    #json
                }
                #older
            }
        }
    }
}

/// An old version: upcasts to the next one, which must name it as `previous`.
fn expand_upcast(input: &Input) -> TokenStream {
    let ident = &input.item.ident;
    let Some(next) = &input.args.upcast_to else {
        return TokenStream::new();
    };
    let body = match &input.args.upcast_with {
        Some(with) => quote_spanned! {with.span()=>
            ::factum::__private::IntoDecoded::<#next>::into_decoded(#with(self))
        },
        None => quote_spanned! {next.span()=>
            ::factum::__private::Decoded::One(<#next as ::core::convert::From<Self>>::from(self))
        },
    };
    let follows = quote_spanned! {next.span()=>
        const _: () = {
            fn __assert_follows<__T: ?::core::marker::Sized + ::factum::__private::Follows<#ident>>() {}
            let _ = __assert_follows::<#next>;
        };
    };
    quote! {
        #[automatically_derived]
        impl ::factum::__private::UpcastTo<#next> for #ident {
            fn upcast(self) -> ::factum::__private::Decoded<#next> {
                #body
            }
        }
        #follows
    }
}
