//! The `#[process_manager]` IR: the arguments, the routed handlers and the hooks, keeping the
//! original syn nodes for spans.

use proc_macro2::{Span, TokenStream};

use super::ATTR;
use super::signature::{self, Returns};
use crate::common::{self, Errors, key};
use crate::handler;

/// `#[process_manager(...)]` on an `impl` block.
pub(super) struct Input {
    pub(super) item: syn::ItemImpl,
    pub(super) name: syn::LitStr,
    pub(super) state: Option<syn::Type>,
    pub(super) command: Option<syn::Type>,
    pub(super) handlers: Vec<Handler>,
    pub(super) on_rejected: Option<Hook>,
    pub(super) on_timeout: Option<Hook>,
}

/// How a handler's event is routed: the variants of `factum::Route`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum RouteKind {
    /// `#[start(by = ...)]`: starts the instance, or continues it when it exists.
    Start,
    /// `#[start(by = ..., strict)]`: starts the instance; refused when it exists.
    StartStrict,
    /// `#[on(by = ...)]`: continues an existing instance.
    Continue,
    /// `#[stop(by = ...)]`: handled by an existing instance, which then completes.
    Stop,
}

/// A routed event handler:
/// `fn(&self, state: &mut State, event: &Event[, recorded: &RecordedEvent]) -> Returns`.
pub(super) struct Handler {
    pub(super) method: syn::Ident,
    pub(super) route: RouteKind,
    /// The event's field holding the correlation key.
    pub(super) by: syn::Ident,
    pub(super) event: syn::TypePath,
    /// The `State` of `&mut State`.
    pub(super) state: syn::Type,
    /// The type of its `&RecordedEvent` argument, when it takes one.
    pub(super) recorded: Option<syn::Type>,
    pub(super) returns: Returns,
}

/// `#[on_rejected]` or `#[on_timeout]`.
pub(super) struct Hook {
    pub(super) method: syn::Ident,
    /// The `State` of `&mut State`.
    pub(super) state: syn::Type,
    pub(super) returns: Returns,
}

const KEYS: &[&str] = &[key::NAME, key::STATE, key::COMMAND];

/// The method attributes, for messages.
const ROUTES: &[&str] = &[key::START, key::ON, key::STOP];

pub(super) fn parse(args: TokenStream, item: TokenStream) -> syn::Result<Input> {
    let mut item = match syn::parse2::<syn::Item>(item)? {
        syn::Item::Impl(i) => i,
        other => {
            return Err(common::wrong_item(
                &other,
                ATTR,
                "the `impl` block of a process manager",
            ));
        }
    };
    let mut errors = Errors::default();
    let mut name = None;
    let mut name_given = false;
    let mut state = None;
    let mut command = None;
    let result = common::parse_args(args, |meta| {
        if meta.path.is_ident(key::NAME) {
            name_given = true;
            let v = common::lit_str(&mut errors, &meta, ATTR)?;
            common::set(&mut errors, &mut name, v, &meta, ATTR);
        } else if meta.path.is_ident(key::STATE) {
            let v = type_value(&mut errors, &meta, "`state = FulfillmentState`")?;
            common::set(&mut errors, &mut state, v, &meta, ATTR);
        } else if meta.path.is_ident(key::COMMAND) {
            let v = type_value(&mut errors, &meta, "`command = FulfillmentCommand`")?;
            common::set(&mut errors, &mut command, v, &meta, ATTR);
        } else {
            common::unknown_key(&mut errors, &meta, ATTR, KEYS)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    }
    match &name {
        Some(name) => common::check_runtime_name(&mut errors, name),
        None if name_given => {}
        None => errors.at(
            Span::call_site(),
            "missing `name`: it keys the process manager's instances, checkpoints and leases, e.g. `#[process_manager(name = \"order_fulfillment\")]`",
        ),
    }
    let inherent = handler::check_impl(&mut errors, &item, ATTR);

    let mut handlers = Vec::new();
    let mut on_rejected: Option<Hook> = None;
    let mut on_timeout: Option<Hook> = None;
    for member in item.items.iter_mut().filter(|_| inherent) {
        let syn::ImplItem::Fn(f) = member else {
            continue;
        };
        let mut marks = Vec::new();
        f.attrs.retain(|attr| {
            let known = [
                key::START,
                key::ON,
                key::STOP,
                key::ON_REJECTED,
                key::ON_TIMEOUT,
            ]
            .iter()
            .any(|k| attr.path().is_ident(k));
            if known {
                marks.push(attr.clone());
            }
            !known
        });
        let [mark] = marks.as_slice() else {
            match marks.get(1) {
                Some(second) => errors.spanned(
                    second,
                    format_args!(
                        "`{}` has two routing attributes: a handler is either `#[start]`, `#[on]`, `#[stop]`, `#[on_rejected]` or `#[on_timeout]`",
                        f.sig.ident
                    ),
                ),
                None => errors.spanned(
                    &f.sig.ident,
                    format_args!(
                        "`{}` has no routing attribute: mark it `#[start(by = field)]`, `#[on(by = field)]` or `#[stop(by = field)]` (or `#[on_rejected]`, `#[on_timeout]`); helper methods go in another `impl` block",
                        f.sig.ident
                    ),
                ),
            }
            continue;
        };
        if mark.path().is_ident(key::ON_REJECTED) || mark.path().is_ident(key::ON_TIMEOUT) {
            let rejected = mark.path().is_ident(key::ON_REJECTED);
            let which = if rejected {
                key::ON_REJECTED
            } else {
                key::ON_TIMEOUT
            };
            if !common::is_helper(&mut errors, mark, which) {
                continue;
            }
            let hook = if rejected {
                signature::on_rejected(&mut errors, &f.sig)
            } else {
                signature::on_timeout(&mut errors, &f.sig)
            };
            let slot = if rejected {
                &mut on_rejected
            } else {
                &mut on_timeout
            };
            if let Some(hook) = hook {
                match slot {
                    Some(first) => errors.spanned(
                        &f.sig.ident,
                        format_args!(
                            "duplicate `#[{which}]` method: `{}` and `{}`",
                            first.method, hook.method
                        ),
                    ),
                    None => *slot = Some(hook),
                }
            }
            continue;
        }
        let route = route_attr(&mut errors, mark);
        let shape = signature::handler(&mut errors, &f.sig);
        if let (Some((route, by)), Some(shape)) = (route, shape) {
            handlers.push(Handler {
                method: f.sig.ident.clone(),
                route,
                by,
                event: shape.event,
                state: shape.state,
                recorded: shape.recorded,
                returns: shape.returns,
            });
        }
    }
    errors.finish()?;
    let name = name.ok_or_else(|| syn::Error::new(Span::call_site(), "missing `name`"))?;
    Ok(Input {
        item,
        name,
        state,
        command,
        handlers,
        on_rejected,
        on_timeout,
    })
}

/// Reads `key = Type`, reporting a string given instead.
fn type_value(
    errors: &mut Errors,
    meta: &syn::meta::ParseNestedMeta<'_>,
    example: &str,
) -> syn::Result<Option<syn::Type>> {
    if !meta.input.peek(syn::Token![=]) {
        errors.spanned(&meta.path, format_args!("expected a type: {example}"));
        return common::skip_value(meta).map(|()| None);
    }
    let value = meta.value()?;
    if value.peek(syn::LitStr) {
        let lit: syn::LitStr = value.parse()?;
        errors.spanned(
            lit,
            format_args!(
                "expected a type, not a string, for `{}`: {example}",
                common::key_of(meta)
            ),
        );
        return Ok(None);
    }
    value.parse().map(Some)
}

/// Parses `#[start(by = field[, strict])]`, `#[on(by = field)]` or `#[stop(by = field)]`.
fn route_attr(errors: &mut Errors, attr: &syn::Attribute) -> Option<(RouteKind, syn::Ident)> {
    let which = ROUTES
        .iter()
        .find(|k| attr.path().is_ident(k))
        .copied()
        .unwrap_or(key::START);
    let needs_by = format!(
        "`#[{which}]` needs `by = <field>`: the event's field holding the correlation key, e.g. `#[{which}(by = order_id)]`"
    );
    let syn::Meta::List(list) = &attr.meta else {
        errors.spanned(attr, needs_by);
        return None;
    };
    let mut by: Option<syn::Ident> = None;
    let mut by_given = false;
    let mut strict: Option<syn::Path> = None;
    let result = list.parse_nested_meta(|meta| {
        if meta.path.is_ident(key::BY) {
            by_given = true;
            let ident = if meta.input.peek(syn::Token![=]) {
                let expr: syn::Expr = meta.value()?.parse()?;
                match &expr {
                    syn::Expr::Path(p) if p.qself.is_none() && p.path.get_ident().is_some() => {
                        p.path.get_ident().cloned()
                    }
                    _ => {
                        errors.spanned(
                            &expr,
                            format_args!(
                                "expected the name of a field of the event for `by`, e.g. `#[{which}(by = order_id)]`"
                            ),
                        );
                        None
                    }
                }
            } else {
                errors.spanned(&meta.path, &needs_by);
                None
            };
            common::set(errors, &mut by, ident, &meta, which);
        } else if meta.path.is_ident(key::STRICT) {
            if which != key::START {
                errors.spanned(
                    &meta.path,
                    format_args!(
                        "`strict` applies to `#[start]` only: it refuses to start an instance that exists"
                    ),
                );
            }
            if meta.input.peek(syn::Token![=]) {
                errors.spanned(&meta.path, "`strict` takes no value");
                common::skip_value(&meta)?;
            }
            common::set(errors, &mut strict, Some(meta.path.clone()), &meta, which);
        } else {
            let known: &[&str] = if which == key::START {
                &[key::BY, key::STRICT]
            } else {
                &[key::BY]
            };
            common::unknown_key(errors, &meta, which, known)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
        return None;
    }
    let Some(by) = by else {
        if !by_given {
            errors.spanned(attr, needs_by);
        }
        return None;
    };
    let route = match which {
        key::ON => RouteKind::Continue,
        key::STOP => RouteKind::Stop,
        _ if strict.is_some() => RouteKind::StartStrict,
        _ => RouteKind::Start,
    };
    Some((route, by))
}
