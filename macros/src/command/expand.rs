//! Code generation for `#[command]`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

use super::parse::Input;

pub(super) fn expand(input: &Input) -> TokenStream {
    let item = &input.item;
    let ident = &item.ident;
    let name = &input.name;
    let version = input.version;
    let id = input.id.as_ref().map(|(member, ty)| {
        quote_spanned! {ty.span()=>
            fn aggregate_id(&self) -> ::core::option::Option<&str> {
                ::core::option::Option::Some(::core::convert::AsRef::<str>::as_ref(&self.#member))
            }
        }
    });
    let routed = input.id.as_ref().map(|(member, ty)| {
        quote_spanned! {ty.span()=>
            #[automatically_derived]
            impl ::factum::__private::Routed for #ident {
                fn instance_id(&self) -> &str {
                    ::core::convert::AsRef::<str>::as_ref(&self.#member)
                }
            }
        }
    });
    let validate = input.args.validate.as_ref().map(|path| {
        quote_spanned! {path.span()=>
            fn validate(&self) -> ::core::result::Result<(), ::factum::__private::String> {
                #path(self)
            }
        }
    });
    quote! {
        #item

        #[automatically_derived]
        impl ::factum::Command for #ident {
            const NAME: &'static str = #name;
            const VERSION: u32 = #version;
            #id
            #validate
        }

        #routed
    }
}
