//! The stubs `#[aggregate]` emits on error: the struct's `AggregateConfig`, or the impl
//! block's two enums and `Aggregate` impl, with the variants it could read.

use proc_macro2::TokenStream;
use quote::quote;

use crate::common::{self, key};
use crate::{handler, stubs};

/// The stubs for the item `#[aggregate(args)]` failed on.
pub(crate) fn stubs(args: &TokenStream, item: &TokenStream) -> TokenStream {
    if let Ok(s) = syn::parse2::<syn::ItemStruct>(item.clone()) {
        return config(&s);
    }
    stubs::impl_block(item).map_or_else(TokenStream::new, |item| impl_stubs(args, &item))
}

/// A config that the `#[aggregate] impl` block can read, so that it reports nothing more.
fn config(item: &syn::ItemStruct) -> TokenStream {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return TokenStream::new();
    }
    let ident = &item.ident;
    quote! {
        #[automatically_derived]
        impl ::factum::__private::AggregateConfig for #ident {
            const CATEGORY: &'static str = "";
            const STATE_VERSION: u32 = 1;
            const SNAPSHOT: ::factum::SnapshotPolicy = ::factum::SnapshotPolicy::Never;
            const STATE_CODEC: ::core::option::Option<::factum::__private::StateCodec<Self>> =
                ::core::option::Option::None;
        }
    }
}

/// The distinct types of the first argument of the methods marked `#[name]`, by last segment.
fn variants(item: &syn::ItemImpl, name: &str) -> Vec<(syn::Ident, syn::TypePath)> {
    let mut out: Vec<(syn::Ident, syn::TypePath)> = Vec::new();
    for f in stubs::marked(item, name) {
        let Some(arg) = handler::typed_args(&f.sig).first().copied() else {
            continue;
        };
        let Some(path) = handler::type_path(stubs::referent(&arg.ty)) else {
            continue;
        };
        let Some(ident) = common::last_ident(path) else {
            continue;
        };
        if !out.iter().any(|(seen, _)| seen == ident) {
            out.push((ident.clone(), path.clone()));
        }
    }
    out
}

/// `E` of the first `#[handle]` method returning `Result<_, E>`.
fn handler_error(item: &syn::ItemImpl) -> Option<syn::Type> {
    stubs::marked(item, key::HANDLE).find_map(|f| {
        let ty = handler::output(&f.sig)?;
        let segment = handler::type_path(ty)?.path.segments.last()?;
        let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
            return None;
        };
        match (segment.ident == "Result", args.args.len(), args.args.last()) {
            (true, 2, Some(syn::GenericArgument::Type(error))) => Some(error.clone()),
            _ => None,
        }
    })
}

fn impl_stubs(args: &TokenStream, item: &syn::ItemImpl) -> TokenStream {
    let Some(ident) = handler::type_path(&item.self_ty)
        .and_then(|p| p.path.get_ident())
        .cloned()
    else {
        return TokenStream::new();
    };
    let mut vis: Option<syn::Visibility> = None;
    let mut error: Option<syn::Type> = None;
    stubs::args(args, |meta| {
        stubs::value(meta, key::VIS, &mut vis) || stubs::value(meta, key::ERROR, &mut error)
    });
    let vis = vis.map_or_else(|| quote!(pub), |vis| quote!(#vis));
    let error = error
        .or_else(|| handler_error(item))
        .map_or_else(|| quote!(::core::convert::Infallible), |e| quote!(#e));
    let event_enum = quote::format_ident!("{}Event", ident);
    let command_enum = quote::format_ident!("{}Command", ident);
    let events = enum_stub(&vis, &event_enum, &variants(item, key::APPLY));
    let commands = enum_stub(&vis, &command_enum, &variants(item, key::HANDLE));
    let body = stubs::body();
    quote! {
        #events
        #commands

        #[automatically_derived]
        impl ::core::cmp::PartialEq for #event_enum {
            fn eq(&self, _: &Self) -> bool {
                #body
            }
        }

        #[automatically_derived]
        impl ::factum::EventSet for #event_enum {
            const EVENT_TYPES: &'static [&'static str] = &[];

            fn event_type(&self) -> &'static str {
                #body
            }

            fn schema_version(&self) -> u32 {
                #body
            }

            fn encode(
                &self,
            ) -> ::core::result::Result<
                ::factum::__private::Payload,
                ::factum::__private::serde_json::Error,
            > {
                #body
            }

            fn decode(
                _: &str,
                _: u32,
                _: &::factum::__private::Payload,
            ) -> ::core::result::Result<
                ::factum::__private::Decoded<Self>,
                ::factum::__private::DecodeError,
            > {
                #body
            }
        }

        #[automatically_derived]
        impl ::factum::CommandSet for #command_enum {
            fn command_name(&self) -> &'static str {
                #body
            }

            fn command_version(&self) -> u32 {
                #body
            }
        }

        #[automatically_derived]
        impl ::factum::Aggregate for #ident {
            const CATEGORY: &'static str = "";

            type Event = #event_enum;
            type Command = #command_enum;
            type Error = #error;

            fn handle(
                &self,
                _: #command_enum,
            ) -> ::core::result::Result<::factum::__private::Vec<#event_enum>, #error> {
                #body
            }

            fn apply(&mut self, _: &#event_enum) {
                #body
            }
        }
    }
}

/// An enum with the variants that could be read, its `From` impls, and `Clone` and `Debug`
/// impls that do not require them of the variants.
fn enum_stub(
    vis: &TokenStream,
    name: &syn::Ident,
    variants: &[(syn::Ident, syn::TypePath)],
) -> TokenStream {
    let (idents, types): (Vec<_>, Vec<_>) = variants.iter().cloned().unzip();
    let body = stubs::body();
    quote! {
        #[allow(private_interfaces, unreachable_pub, dead_code)]
        #vis enum #name {
            #(#idents(#types),)*
        }

        #(
            #[automatically_derived]
            impl ::core::convert::From<#types> for #name {
                fn from(__value: #types) -> Self {
                    Self::#idents(__value)
                }
            }
        )*

        #[automatically_derived]
        impl ::core::clone::Clone for #name {
            fn clone(&self) -> Self {
                #body
            }
        }

        #[automatically_derived]
        impl ::core::fmt::Debug for #name {
            fn fmt(&self, _: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                #body
            }
        }
    }
}
