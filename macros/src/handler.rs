//! Method shapes shared by `#[projection]` and `#[process_manager]`: receivers, arguments and
//! return types of the handlers in their `impl` blocks.

use syn::spanned::Spanned;

use crate::common::{self, Errors};

/// The impl block's checks common to both macros: an inherent, non-generic impl of a named
/// type. `false` for a trait impl, whose methods are then not checked as handlers.
pub(crate) fn check_impl(errors: &mut Errors, item: &syn::ItemImpl, attr: &str) -> bool {
    let inherent = match &item.trait_ {
        Some((_, path, _)) => {
            errors.spanned(
                path,
                format_args!(
                    "`#[{attr}]` goes on an inherent impl block (`impl {} {{ ... }}`), not on a trait impl",
                    common::display(&item.self_ty)
                ),
            );
            false
        }
        None => true,
    };
    common::no_generics(errors, &item.generics, attr);
    if type_path(&item.self_ty).is_none() {
        errors.spanned(
            &item.self_ty,
            format_args!("`#[{attr}]` expects a type name here, such as `impl OrderList`"),
        );
    }
    inherent
}

/// A plain type name such as `OrderPlaced` or `events::OrderPlaced`.
pub(crate) fn type_path(ty: &syn::Type) -> Option<&syn::TypePath> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => Some(p),
        syn::Type::Paren(p) => type_path(&p.elem),
        syn::Type::Group(g) => type_path(&g.elem),
        _ => None,
    }
}

/// The typed arguments after the receiver.
pub(crate) fn typed_args(sig: &syn::Signature) -> Vec<&syn::PatType> {
    sig.inputs
        .iter()
        .filter_map(|a| match a {
            syn::FnArg::Typed(t) => Some(t),
            syn::FnArg::Receiver(_) => None,
        })
        .collect()
}

/// Checks that the method takes `&self`; `what` names the method in messages.
pub(crate) fn shared_self(errors: &mut Errors, sig: &syn::Signature, what: &str) -> bool {
    match sig.receiver() {
        Some(r) if r.reference.is_some() && r.mutability.is_none() && r.colon_token.is_none() => {
            true
        }
        Some(r) => {
            errors.spanned(r, format_args!("{what} `{}` must take `&self`", sig.ident));
            false
        }
        None => {
            errors.spanned(
                &sig.ident,
                format_args!("{what} `{}` must take `&self`", sig.ident),
            );
            false
        }
    }
}

/// Reports generic parameters on a method.
pub(crate) fn not_generic(errors: &mut Errors, sig: &syn::Signature, what: &str) {
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.spanned(
            &sig.generics,
            format_args!("{what} `{}` cannot be generic", sig.ident),
        );
    }
}

/// Reports a wrong number of arguments after `self`, spanned on the extra ones or on the
/// parentheses; `true` when the count is within `min..=max`.
pub(crate) fn arg_count(
    errors: &mut Errors,
    sig: &syn::Signature,
    min: usize,
    max: usize,
    message: impl FnOnce(usize) -> String,
) -> bool {
    let args = typed_args(sig);
    if (min..=max).contains(&args.len()) {
        return true;
    }
    let message = message(args.len());
    match args.get(max..) {
        Some(extra) if !extra.is_empty() => errors.spanned(quote::quote!(#(#extra),*), message),
        _ => errors.at(sig.paren_token.span.join(), message),
    }
    false
}

/// `1 argument`, `2 arguments`.
pub(crate) fn arguments(n: usize) -> String {
    if n == 1 {
        "1 argument".to_owned()
    } else {
        format!("{n} arguments")
    }
}

/// The event type of an argument that must be `&Event`.
pub(crate) fn event_ref(
    errors: &mut Errors,
    sig: &syn::Signature,
    ty: &syn::Type,
    what: &str,
) -> Option<syn::TypePath> {
    match ty {
        syn::Type::Reference(r) if r.mutability.is_none() => {
            let path = type_path(&r.elem).cloned();
            if path.is_none() {
                errors.spanned(&r.elem, "expected an event type");
            }
            path
        }
        syn::Type::Reference(r) => {
            errors.spanned(
                r,
                format_args!(
                    "{what} `{}` takes the event by shared reference: `&{}`",
                    sig.ident,
                    common::display(&r.elem)
                ),
            );
            None
        }
        other => {
            errors.spanned(
                other,
                format_args!(
                    "{what} `{}` takes the event by reference: `&{}` instead of `{}`",
                    sig.ident,
                    common::display(other),
                    common::display(other)
                ),
            );
            None
        }
    }
}

/// Checks that an argument is a shared reference, such as `&RecordedEvent` or `&str`.
pub(crate) fn shared_ref(
    errors: &mut Errors,
    sig: &syn::Signature,
    ty: &syn::Type,
    what: &str,
    expected: &str,
) {
    if !matches!(ty, syn::Type::Reference(r) if r.mutability.is_none()) {
        errors.spanned(
            ty,
            format_args!("{what} `{}` takes `{expected}` here", sig.ident),
        );
    }
}

/// The success type of `Result<T, E>`, or of an alias such as `io::Result<T>` or
/// `anyhow::Result<T>`.
pub(crate) fn result_ok(ty: &syn::Type) -> Option<&syn::Type> {
    let segment = type_path(ty)?.path.segments.last()?;
    if segment.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    match (args.args.len(), args.args.first()) {
        (1 | 2, Some(syn::GenericArgument::Type(ok))) => Some(ok),
        _ => None,
    }
}

/// Whether a type is `()`.
pub(crate) fn is_unit(ty: &syn::Type) -> bool {
    matches!(ty, syn::Type::Tuple(t) if t.elems.is_empty())
}

/// A method's return type, if written.
pub(crate) fn output(sig: &syn::Signature) -> Option<&syn::Type> {
    match &sig.output {
        syn::ReturnType::Type(_, ty) => Some(ty),
        syn::ReturnType::Default => None,
    }
}

/// `Name<A>` as `A`.
pub(crate) fn single_generic<'a>(ty: &'a syn::Type, name: &str) -> Option<&'a syn::Type> {
    let segment = type_path(ty)?.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(t)) if args.args.len() == 1 => Some(t),
        _ => None,
    }
}

/// The span of a method's return type, or of its name when it returns nothing.
pub(crate) fn output_span(sig: &syn::Signature) -> proc_macro2::Span {
    output(sig).map_or_else(|| sig.ident.span(), Spanned::span)
}

/// Whether a type is the event's envelope, `&RecordedEvent` (a path ending in `RecordedEvent`).
pub(crate) fn is_recorded(ty: &syn::Type) -> bool {
    let ty = match ty {
        syn::Type::Reference(r) => &*r.elem,
        other => other,
    };
    type_path(ty)
        .and_then(common::last_ident)
        .is_some_and(|ident| ident == "RecordedEvent")
}

/// The type to suggest for the event argument: the user's, when one argument other than those
/// `skip` rejects reads as an event reference, else `&Event`.
pub(crate) fn suggested_event(args: &[&syn::PatType], skip: impl Fn(&syn::Type) -> bool) -> String {
    args.iter()
        .map(|arg| &*arg.ty)
        .find(|ty| {
            !skip(ty) && matches!(ty, syn::Type::Reference(r) if type_path(&r.elem).is_some())
        })
        .map_or_else(|| "&Event".to_owned(), common::display)
}
