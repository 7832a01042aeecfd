//! What an attribute macro emits besides the user's item when it reports an error: the enums
//! and trait impls it would have generated, with bodies that are never run, so that code using
//! them elsewhere compiles and the user sees only the macro's own error (thiserror's
//! `fallback.rs`, clap's `dummies.rs`).

use proc_macro2::TokenStream;
use quote::quote;
use syn::meta::ParseNestedMeta;

use crate::handler;

/// The body of a stubbed method.
pub(crate) fn body() -> TokenStream {
    quote!(::core::unreachable!(
        "generated as a stub after a macro error, which fails the build"
    ))
}

/// The `impl` block of an attribute macro that the stubs can be generated for: inherent or
/// not, without generic parameters, for a plain type name.
pub(crate) fn impl_block(item: &TokenStream) -> Option<syn::ItemImpl> {
    let item: syn::ItemImpl = syn::parse2(item.clone()).ok()?;
    let plain = item.generics.params.is_empty()
        && item.generics.where_clause.is_none()
        && handler::type_path(&item.self_ty).is_some();
    plain.then_some(item)
}

/// Reads what it can of an attribute's arguments, ignoring every error (the macro reports
/// them): `read` is called with each key and returns the value it parsed, if any.
pub(crate) fn args(args: &TokenStream, mut read: impl FnMut(&ParseNestedMeta<'_>) -> bool) {
    let _ = crate::common::parse_args(args.clone(), |meta| {
        if !read(&meta) {
            crate::common::skip_value(&meta)?;
        }
        Ok(())
    });
}

/// Parses `key = <T>` when `meta` is `key`; `true` when it consumed the value.
pub(crate) fn value<T: syn::parse::Parse>(
    meta: &ParseNestedMeta<'_>,
    key: &str,
    slot: &mut Option<T>,
) -> bool {
    if !meta.path.is_ident(key) || !meta.input.peek(syn::Token![=]) {
        return false;
    }
    let Ok(input) = meta.value() else {
        return false;
    };
    match input.parse::<T>() {
        Ok(v) => {
            if slot.is_none() {
                *slot = Some(v);
            }
            true
        }
        // The value is left unread: the rest of the arguments are not read either.
        Err(_) => false,
    }
}

/// The functions of an impl block that carry the helper attribute `#[name]`.
pub(crate) fn marked<'a>(
    item: &'a syn::ItemImpl,
    name: &'a str,
) -> impl Iterator<Item = &'a syn::ImplItemFn> + 'a {
    item.items.iter().filter_map(move |member| match member {
        syn::ImplItem::Fn(f) if f.attrs.iter().any(|a| a.path().is_ident(name)) => Some(f),
        _ => None,
    })
}

/// The type under any references: `PlaceOrder` for `&PlaceOrder`.
pub(crate) fn referent(ty: &syn::Type) -> &syn::Type {
    match ty {
        syn::Type::Reference(r) => referent(&r.elem),
        syn::Type::Paren(p) => referent(&p.elem),
        syn::Type::Group(g) => referent(&g.elem),
        other => other,
    }
}
