//! The `#[aggregate]` IR: the state struct's configuration, and the handlers and apply methods
//! of the `impl` block, keeping the original syn nodes for spans.

use proc_macro2::TokenStream;
use syn::spanned::Spanned;

use super::ATTR;
use crate::common::{self, Errors, key};

/// `#[aggregate(...)]` on the state struct.
pub(super) struct StructInput {
    pub(super) item: syn::ItemStruct,
    pub(super) category: syn::LitStr,
    pub(super) snapshot_every: Option<(u64, syn::LitInt)>,
    pub(super) state_version: Option<(u32, syn::LitInt)>,
}

/// `#[aggregate(...)]` on the `impl` block.
pub(super) struct ImplInput {
    pub(super) item: syn::ItemImpl,
    /// The aggregate's name (the impl's self type).
    pub(super) ident: syn::Ident,
    pub(super) error: Option<syn::Type>,
    pub(super) vis: Option<syn::Visibility>,
    pub(super) handlers: Vec<Handler>,
    pub(super) applies: Vec<Apply>,
}

pub(super) enum Input {
    Struct(Box<StructInput>),
    Impl(Box<ImplInput>),
}

/// What a command handler returns on success.
pub(super) enum Emits {
    /// One event: `Result<OrderPlaced, E>`.
    One(syn::TypePath),
    /// Zero or one event: `Result<Option<OrderPlaced>, E>`.
    Maybe(syn::TypePath),
    /// Any number of one event type: `Result<Vec<ItemAdded>, E>`.
    Many(syn::TypePath),
    /// One event of each type, in order: `Result<(OrderPlaced, PaymentRequested), E>`.
    Tuple(Vec<syn::TypePath>),
    /// Any events of the aggregate: `Result<Vec<OrderEvent>, E>`.
    Set,
    /// One event of the aggregate: `Result<OrderEvent, E>`.
    SetOne,
    /// No event: `Result<(), E>`, a command accepted that changes nothing.
    Nothing,
}

impl Emits {
    /// The event types this handler can emit, when they are spelled out.
    pub(super) fn types(&self) -> Vec<&syn::TypePath> {
        match self {
            Emits::One(t) | Emits::Maybe(t) | Emits::Many(t) => vec![t],
            Emits::Tuple(ts) => ts.iter().collect(),
            Emits::Set | Emits::SetOne | Emits::Nothing => Vec::new(),
        }
    }
}

/// A `#[handle]` method.
pub(super) struct Handler {
    pub(super) method: syn::Ident,
    pub(super) command: syn::TypePath,
    pub(super) emits: Emits,
    pub(super) error: syn::Type,
}

/// An `#[apply]` method.
pub(super) struct Apply {
    pub(super) method: syn::Ident,
    pub(super) event: syn::TypePath,
}

const STRUCT_KEYS: &[&str] = &[key::CATEGORY, key::SNAPSHOT_EVERY, key::STATE_VERSION];
const IMPL_KEYS: &[&str] = &[key::ERROR, key::VIS];

pub(super) fn parse(args: TokenStream, item: TokenStream) -> syn::Result<Input> {
    match syn::parse2::<syn::Item>(item)? {
        syn::Item::Struct(s) => parse_struct(args, s).map(|s| Input::Struct(Box::new(s))),
        syn::Item::Impl(i) => parse_impl(args, i).map(|i| Input::Impl(Box::new(i))),
        other => Err(common::wrong_item(
            &other,
            ATTR,
            "the aggregate's state struct and its `impl` block",
        )),
    }
}

fn parse_struct(args: TokenStream, item: syn::ItemStruct) -> syn::Result<StructInput> {
    let mut errors = Errors::default();
    common::no_generics(&mut errors, &item.generics, ATTR);
    let mut category = None;
    let mut snapshot_every = None;
    let mut state_version = None;
    let result = common::parse_args(args, |meta| {
        if meta.path.is_ident(key::CATEGORY) {
            let v = common::lit_str(&mut errors, &meta, ATTR)?;
            common::set(&mut errors, &mut category, v, &meta, ATTR);
        } else if meta.path.is_ident(key::SNAPSHOT_EVERY) {
            let v = common::lit_positive(&mut errors, &meta, ATTR)?;
            common::set(&mut errors, &mut snapshot_every, v, &meta, ATTR);
        } else if meta.path.is_ident(key::STATE_VERSION) {
            let v = common::lit_positive(&mut errors, &meta, ATTR)?;
            common::set(&mut errors, &mut state_version, v, &meta, ATTR);
        } else if IMPL_KEYS.iter().any(|k| meta.path.is_ident(k)) {
            errors.spanned(
                &meta.path,
                format_args!(
                    "`{}` goes on the `#[aggregate]` impl block, not on the struct",
                    common::key_of(&meta)
                ),
            );
            common::skip_value(&meta)?;
        } else {
            common::unknown_key(&mut errors, &meta, ATTR, STRUCT_KEYS)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    }
    if let Some(c) = &category {
        common::check_category(&mut errors, c);
    } else {
        errors.at(
            proc_macro2::Span::call_site(),
            format_args!(
                "missing `category`: streams of `{}` are named `{{category}}-{{id}}`, e.g. `#[aggregate(category = \"order\")]`",
                item.ident
            ),
        );
    }
    errors.finish()?;
    let category =
        category.ok_or_else(|| syn::Error::new(item.ident.span(), "missing `category`"))?;
    Ok(StructInput {
        item,
        category,
        snapshot_every,
        state_version,
    })
}

fn parse_impl(args: TokenStream, mut item: syn::ItemImpl) -> syn::Result<ImplInput> {
    let mut errors = Errors::default();
    let mut error = None;
    let mut vis = None;
    let result = common::parse_args(args, |meta| {
        if meta.path.is_ident(key::ERROR) {
            let v = not_a_string(&mut errors, &meta, "a type", "`error = OrderError`")?
                .then(|| meta.input.parse::<syn::Type>())
                .transpose()?;
            common::set(&mut errors, &mut error, v, &meta, ATTR);
        } else if meta.path.is_ident(key::VIS) {
            let v = not_a_string(&mut errors, &meta, "a visibility", "`vis = pub(crate)`")?
                .then(|| meta.input.parse::<syn::Visibility>())
                .transpose()?;
            common::set(&mut errors, &mut vis, v, &meta, ATTR);
        } else if STRUCT_KEYS.iter().any(|k| meta.path.is_ident(k)) {
            errors.spanned(
                &meta.path,
                format_args!(
                    "`{}` goes on the aggregate's struct, not on its impl block",
                    common::key_of(&meta)
                ),
            );
            common::skip_value(&meta)?;
        } else {
            common::unknown_key(&mut errors, &meta, ATTR, IMPL_KEYS)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    }
    if let Some((_, path, _)) = &item.trait_ {
        errors.spanned(
            path,
            "`#[aggregate]` goes on an inherent impl block (`impl Order { ... }`), not on a trait impl",
        );
    }
    common::no_generics(&mut errors, &item.generics, ATTR);
    let ident = match &*item.self_ty {
        syn::Type::Path(p) if p.qself.is_none() && p.path.get_ident().is_some() => {
            p.path.get_ident().cloned()
        }
        other => {
            errors.spanned(
                other,
                "`#[aggregate]` expects the aggregate's name here, such as `impl Order`",
            );
            None
        }
    };
    let mut handlers = Vec::new();
    let mut applies = Vec::new();
    for member in &mut item.items {
        let syn::ImplItem::Fn(f) = member else {
            continue;
        };
        let mut handle = None;
        let mut apply = None;
        f.attrs.retain(|attr| {
            if common::is_helper(&mut errors, attr, key::HANDLE) {
                handle = Some(attr.clone());
                false
            } else if common::is_helper(&mut errors, attr, key::APPLY) {
                apply = Some(attr.clone());
                false
            } else {
                true
            }
        });
        match (handle, apply) {
            (Some(_), Some(a)) => errors.spanned(
                a,
                format_args!(
                    "`{}` cannot be both `#[handle]` and `#[apply]`",
                    f.sig.ident
                ),
            ),
            (Some(_), None) => handlers.extend(parse_handler(&mut errors, &f.sig)),
            (None, Some(_)) => applies.extend(parse_apply(&mut errors, &f.sig)),
            (None, None) => {}
        }
    }
    errors.finish()?;
    let ident =
        ident.ok_or_else(|| syn::Error::new(item.self_ty.span(), "expected a type name"))?;
    Ok(ImplInput {
        item,
        ident,
        error,
        vis,
        handlers,
        applies,
    })
}

/// Consumes `=` and reports a string given where tokens are expected; `true` when the value
/// is not a string and is left to parse.
fn not_a_string(
    errors: &mut Errors,
    meta: &syn::meta::ParseNestedMeta<'_>,
    expected: &str,
    example: &str,
) -> syn::Result<bool> {
    let value = meta.value()?;
    if value.peek(syn::LitStr) {
        let lit: syn::LitStr = value.parse()?;
        errors.spanned(
            lit,
            format_args!(
                "expected {expected}, not a string, for `{}`: {example}",
                common::key_of(meta)
            ),
        );
        return Ok(false);
    }
    Ok(true)
}

/// Shared checks of a method's shape: a plain, synchronous, non-generic fn.
fn plain_fn(errors: &mut Errors, sig: &syn::Signature, attr: &str) {
    if let Some(a) = &sig.asyncness {
        errors.spanned(
            a,
            format_args!("`#[{attr}]` method `{}` cannot be async", sig.ident),
        );
    }
    if !sig.generics.params.is_empty() {
        errors.spanned(
            &sig.generics,
            format_args!("`#[{attr}]` method `{}` cannot be generic", sig.ident),
        );
    }
}

/// The receiver, checked against `&self` (`mutable = false`) or `&mut self`.
fn check_receiver(errors: &mut Errors, sig: &syn::Signature, attr: &str, mutable: bool) -> bool {
    let expected = if mutable { "&mut self" } else { "&self" };
    match sig.receiver() {
        Some(r)
            if r.reference.is_some()
                && r.mutability.is_some() == mutable
                && r.colon_token.is_none() =>
        {
            true
        }
        Some(r) => {
            errors.spanned(
                r,
                format_args!("`#[{attr}]` method `{}` must take `{expected}`", sig.ident),
            );
            false
        }
        None => {
            errors.spanned(
                &sig.ident,
                format_args!("`#[{attr}]` method `{}` must take `{expected}`", sig.ident),
            );
            false
        }
    }
}

/// The one argument after the receiver.
fn single_arg<'a>(
    errors: &mut Errors,
    sig: &'a syn::Signature,
    attr: &str,
    what: &str,
) -> Option<&'a syn::Type> {
    let args: Vec<&syn::PatType> = sig
        .inputs
        .iter()
        .filter_map(|a| match a {
            syn::FnArg::Typed(t) => Some(t),
            syn::FnArg::Receiver(_) => None,
        })
        .collect();
    if let [arg] = args.as_slice() {
        return Some(&arg.ty);
    }
    let message = format!(
        "`#[{attr}]` method `{}` takes {what} as its only argument besides `self`, found {} arguments",
        sig.ident,
        args.len()
    );
    match args.get(1..) {
        Some(extra) if !extra.is_empty() => errors.spanned(quote::quote!(#(#extra),*), message),
        _ => errors.at(sig.paren_token.span.join(), message),
    }
    None
}

/// A plain type name such as `PlaceOrderV1` or `events::OrderPlaced`.
fn type_path(ty: &syn::Type) -> Option<&syn::TypePath> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => Some(p),
        syn::Type::Paren(p) => type_path(&p.elem),
        syn::Type::Group(g) => type_path(&g.elem),
        _ => None,
    }
}

fn parse_handler(errors: &mut Errors, sig: &syn::Signature) -> Option<Handler> {
    const HANDLE: &str = key::HANDLE;
    plain_fn(errors, sig, HANDLE);
    let receiver_ok = check_receiver(errors, sig, HANDLE, false);
    let command = single_arg(errors, sig, HANDLE, "the command by value").and_then(|ty| {
        if let syn::Type::Reference(r) = ty {
            errors.spanned(
                r,
                format_args!(
                    "`#[handle]` method `{}` takes the command by value: `{}` instead of `{}`",
                    sig.ident,
                    common::display(&r.elem),
                    common::display(ty)
                ),
            );
            return None;
        }
        let path = type_path(ty).cloned();
        if path.is_none() {
            errors.spanned(
                ty,
                format_args!(
                    "`#[handle]` method `{}` takes a command type by value",
                    sig.ident
                ),
            );
        }
        path
    });
    let returns = handler_return(errors, sig);
    match (receiver_ok, command, returns) {
        (true, Some(command), Some((emits, error))) => Some(Handler {
            method: sig.ident.clone(),
            command,
            emits,
            error,
        }),
        _ => None,
    }
}

/// `Result<Emits, E>`.
fn handler_return(errors: &mut Errors, sig: &syn::Signature) -> Option<(Emits, syn::Type)> {
    let expected = format!(
        "`#[handle]` method `{}` must return `Result<Event, Error>`, `Result<Vec<Event>, Error>`, `Result<Option<Event>, Error>` or `Result<(Event1, Event2), Error>`",
        sig.ident
    );
    let ty = match &sig.output {
        syn::ReturnType::Type(_, ty) => ty,
        syn::ReturnType::Default => {
            errors.spanned(&sig.ident, expected);
            return None;
        }
    };
    let Some((ok, err)) = generic_pair(ty, "Result") else {
        errors.spanned(ty, expected);
        return None;
    };
    let emits = match ok {
        syn::Type::Tuple(t) if t.elems.is_empty() => Emits::Nothing,
        syn::Type::Tuple(t) => {
            let mut types = Vec::new();
            for elem in &t.elems {
                match type_path(elem) {
                    Some(p) => types.push(p.clone()),
                    None => errors.spanned(elem, "expected an event type"),
                }
            }
            Emits::Tuple(types)
        }
        other => match type_path(other) {
            Some(p) => match single_generic(p, "Vec")
                .or_else(|| single_generic(p, "Option").map(|(t, _)| (t, false)))
            {
                Some((inner, is_vec)) => match type_path(inner) {
                    Some(inner) if is_vec => Emits::Many(inner.clone()),
                    Some(inner) => Emits::Maybe(inner.clone()),
                    None => {
                        errors.spanned(inner, "expected an event type");
                        return None;
                    }
                },
                None => Emits::One(p.clone()),
            },
            None => {
                errors.spanned(other, expected);
                return None;
            }
        },
    };
    Some((emits, err.clone()))
}

/// `Name<A, B>` as `(A, B)`.
fn generic_pair<'a>(ty: &'a syn::Type, name: &str) -> Option<(&'a syn::Type, &'a syn::Type)> {
    let segment = type_path(ty)?.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    let types: Vec<&syn::Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [a, b] if args.args.len() == 2 => Some((a, b)),
        _ => None,
    }
}

/// `Name<A>` as `(A, true)`.
fn single_generic<'a>(p: &'a syn::TypePath, name: &str) -> Option<(&'a syn::Type, bool)> {
    let segment = p.path.segments.last()?;
    if segment.ident != name {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &segment.arguments else {
        return None;
    };
    match args.args.first() {
        Some(syn::GenericArgument::Type(t)) if args.args.len() == 1 => Some((t, true)),
        _ => None,
    }
}

fn parse_apply(errors: &mut Errors, sig: &syn::Signature) -> Option<Apply> {
    const APPLY: &str = key::APPLY;
    plain_fn(errors, sig, APPLY);
    let receiver_ok = check_receiver(errors, sig, APPLY, true);
    if let syn::ReturnType::Type(_, ty) = &sig.output {
        errors.spanned(
            ty,
            format_args!(
                "`#[apply]` method `{}` must not return a value: applying an event cannot fail",
                sig.ident
            ),
        );
    }
    let event = single_arg(errors, sig, APPLY, "`&Event`").and_then(|ty| match ty {
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
                    "`#[apply]` method `{}` takes the event by shared reference: `&{}`",
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
                    "`#[apply]` method `{}` takes the event by reference: `&{}` instead of `{}`",
                    sig.ident,
                    common::display(other),
                    common::display(other)
                ),
            );
            None
        }
    });
    match (receiver_ok, event) {
        (true, Some(event)) => Some(Apply {
            method: sig.ident.clone(),
            event,
        }),
        _ => None,
    }
}
