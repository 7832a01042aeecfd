//! `#[command]` on an enum: a set of commands that a router dispatches, one per variant.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::ATTR;
use crate::common::Errors;

/// Expands `#[command]` on an enum whose variants each hold one command: `From` each command
/// into the enum, and `Routable`, which dispatches the variant's command.
pub(super) fn expand(errors: &mut Errors, args: TokenStream, item: syn::ItemEnum) -> TokenStream {
    if !args.is_empty() {
        errors.spanned(
            &args,
            format_args!(
                "`#[{ATTR}]` on an enum takes no arguments: each variant's command has its own name and version"
            ),
        );
    }
    if !item.generics.params.is_empty() {
        errors.spanned(
            &item.generics,
            format_args!("`#[{ATTR}]` does not support generic enums"),
        );
    }
    if item.variants.is_empty() {
        errors.spanned(
            &item.ident,
            format_args!(
                "`#[{ATTR}]` on an enum needs at least one variant holding a command, such as `Reserve(ReserveStockV1)`"
            ),
        );
    }
    let mut variants = Vec::new();
    for variant in &item.variants {
        match &variant.fields {
            syn::Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
                variants.push((&variant.ident, &fields.unnamed[0].ty));
            }
            _ => errors.spanned(
                variant,
                format_args!(
                    "each variant of a `#[{ATTR}]` enum holds one command, such as `{}(ReserveStockV1)`",
                    variant.ident
                ),
            ),
        }
    }
    let ident = &item.ident;
    let froms = variants.iter().map(|(variant, ty)| {
        quote_spanned! {ty.span()=>
            #[automatically_derived]
            impl ::core::convert::From<#ty> for #ident {
                fn from(command: #ty) -> Self {
                    Self::#variant(command)
                }
            }
        }
    });
    let arms = variants.iter().map(|(variant, ty)| {
        let call = quote_spanned! {ty.span()=>
            <#ty as ::factum::__private::Routable>::dispatch_through(__command, __router, __metadata)
        };
        quote! {
            Self::#variant(__command) => ::std::boxed::Box::pin(#call),
        }
    });
    quote! {
        #item

        #(#froms)*

        #[automatically_derived]
        impl ::factum::__private::Routable for #ident {
            fn dispatch_through(
                &self,
                __router: &::factum::__private::Router,
                __metadata: ::factum::__private::Metadata,
            ) -> ::factum::__private::BoxFuture<'static, ::factum::__private::DispatchResult> {
                match self {
                    #(#arms)*
                }
            }
        }
    }
}
