//! The stub `#[projection]` emits on error: the `Projection` (or `PgProjection`) impl, so that
//! registering the read model with a runner reports nothing more.

use proc_macro2::{TokenStream, TokenTree};
use quote::quote;

use crate::common::key;
use crate::stubs;

/// The stub for the impl block `#[projection(args)]` failed on.
pub(crate) fn stubs(args: &TokenStream, item: &TokenStream) -> TokenStream {
    let Some(item) = stubs::impl_block(item) else {
        return TokenStream::new();
    };
    let self_ty = &item.self_ty;
    let body = stubs::body();
    let transactional = args
        .clone()
        .into_iter()
        .any(|t| matches!(t, TokenTree::Ident(i) if i == key::TRANSACTIONAL));
    let (projection_trait, tx_param) = if transactional {
        (
            quote!(::factum_postgres::PgProjection),
            quote!(_: &::factum_postgres::PgTransaction<'_>,),
        )
    } else {
        (quote!(::factum::Projection), TokenStream::new())
    };
    quote! {
        #[automatically_derived]
        impl #projection_trait for #self_ty {
            fn name(&self) -> &str {
                #body
            }

            async fn handle(
                &self,
                #tx_param
                _: &::factum::RecordedEvent,
            ) -> ::core::result::Result<(), ::factum::BoxError> {
                #body
            }
        }
    }
}
