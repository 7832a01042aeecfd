//! The `#[projection]` IR: the arguments, the handlers and the reset method, keeping the
//! original syn nodes for spans.

use proc_macro2::{Span, TokenStream};

use super::ATTR;
use crate::common::{self, Errors, key};
use crate::handler;

/// `#[projection(...)]` on an `impl` block.
pub(super) struct Input {
    pub(super) item: syn::ItemImpl,
    pub(super) name: syn::LitStr,
    pub(super) categories: Vec<syn::LitStr>,
    /// `transactional`: a `factum_postgres::PgProjection` whose methods take the transaction.
    pub(super) transactional: bool,
    /// `skip_unknown_versions`: a stored version of a handled type that no handled type
    /// decodes is skipped (logged and counted) instead of failing.
    pub(super) skip_unknown_versions: bool,
    pub(super) handlers: Vec<Handler>,
    pub(super) reset: Option<Reset>,
}

/// An event handler: `async fn(&self, &Event[, &RecordedEvent]) -> Result<(), E>` or `-> ()`,
/// with `&PgTransaction<'_>` first when the projection is transactional.
pub(super) struct Handler {
    pub(super) method: syn::Ident,
    /// The type of its transaction argument (transactional projections).
    pub(super) tx: Option<syn::Type>,
    pub(super) event: syn::TypePath,
    /// The type of its `&RecordedEvent` argument, when it takes one.
    pub(super) recorded: Option<syn::Type>,
    pub(super) returns: Returns,
}

/// The `#[reset]` method: `async fn(&self) -> Result<(), E>` or `-> ()`, with
/// `&PgTransaction<'_>` when the projection is transactional.
pub(super) struct Reset {
    pub(super) method: syn::Ident,
    /// The type of its transaction argument (transactional projections).
    pub(super) tx: Option<syn::Type>,
    pub(super) returns: Returns,
}

/// What a handler or the reset method returns.
pub(super) enum Returns {
    /// `()`: it cannot fail.
    Unit,
    /// `Result<(), E>` with `E: Into<BoxError>`; the span of the return type.
    Result(Span),
}

const KEYS: &[&str] = &[
    key::NAME,
    key::CATEGORIES,
    key::TRANSACTIONAL,
    key::SKIP_UNKNOWN_VERSIONS,
];

/// What a handler is called in messages.
const HANDLER: &str = "projection handler";

pub(super) fn parse(args: TokenStream, item: TokenStream) -> syn::Result<Input> {
    let mut item = match syn::parse2::<syn::Item>(item)? {
        syn::Item::Impl(i) => i,
        other => {
            return Err(common::wrong_item(
                &other,
                ATTR,
                "the `impl` block of a read model",
            ));
        }
    };
    let mut errors = Errors::default();
    let mut name = None;
    let mut name_given = false;
    let mut categories: Option<Vec<syn::LitStr>> = None;
    let mut transactional: Option<bool> = None;
    let mut skip_unknown_versions: Option<bool> = None;
    let result = common::parse_args(args, |meta| {
        if meta.path.is_ident(key::NAME) {
            name_given = true;
            let v = common::lit_str(&mut errors, &meta, ATTR)?;
            common::set(&mut errors, &mut name, v, &meta, ATTR);
        } else if meta.path.is_ident(key::CATEGORIES) {
            let v = string_list(&mut errors, &meta)?;
            common::set(&mut errors, &mut categories, v, &meta, ATTR);
        } else if meta.path.is_ident(key::TRANSACTIONAL) {
            if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                errors.spanned(
                    &meta.path,
                    "`transactional` takes no value: write `#[projection(name = \"...\", transactional)]`",
                );
                common::skip_value(&meta)?;
            }
            // Checked as transactional either way, so the methods' errors make sense.
            let v = Some(true);
            common::set(&mut errors, &mut transactional, v, &meta, ATTR);
        } else if meta.path.is_ident(key::SKIP_UNKNOWN_VERSIONS) {
            if meta.input.peek(syn::Token![=]) || meta.input.peek(syn::token::Paren) {
                errors.spanned(
                    &meta.path,
                    "`skip_unknown_versions` takes no value: write `#[projection(name = \"...\", skip_unknown_versions)]`, or leave it out to fail on unknown versions",
                );
                common::skip_value(&meta)?;
            }
            let v = Some(true);
            common::set(&mut errors, &mut skip_unknown_versions, v, &meta, ATTR);
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
            "missing `name`: it keys the projection's checkpoints and leases, e.g. `#[projection(name = \"order_list\")]`",
        ),
    }
    for category in categories.iter().flatten() {
        common::check_category(&mut errors, category);
    }
    let inherent = handler::check_impl(&mut errors, &item, ATTR);
    let transactional = transactional.unwrap_or(false);

    let mut handlers = Vec::new();
    let mut reset: Option<Reset> = None;
    for member in item.items.iter_mut().filter(|_| inherent) {
        let syn::ImplItem::Fn(f) = member else {
            continue;
        };
        let mut is_reset = false;
        f.attrs.retain(|attr| {
            if common::is_helper(&mut errors, attr, key::RESET) {
                is_reset = true;
                false
            } else {
                true
            }
        });
        if is_reset {
            if let Some(r) = parse_reset(&mut errors, &f.sig, transactional) {
                match &reset {
                    Some(first) => errors.spanned(
                        &f.sig.ident,
                        format_args!(
                            "duplicate `#[reset]` method: `{}` and `{}`",
                            first.method, r.method
                        ),
                    ),
                    None => reset = Some(r),
                }
            }
        } else {
            handlers.extend(parse_handler(&mut errors, &f.sig, transactional));
        }
    }
    errors.finish()?;
    let name = name.ok_or_else(|| syn::Error::new(Span::call_site(), "missing `name`"))?;
    Ok(Input {
        item,
        name,
        categories: categories.unwrap_or_default(),
        transactional,
        skip_unknown_versions: skip_unknown_versions.unwrap_or(false),
        handlers,
        reset,
    })
}

/// Reads `key = ["a", "b"]`.
fn string_list(
    errors: &mut Errors,
    meta: &syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<Option<Vec<syn::LitStr>>> {
    let example = "expected a list of strings such as `categories = [\"order\", \"payment\"]`";
    if !meta.input.peek(syn::Token![=]) {
        errors.spanned(&meta.path, example);
        return common::skip_value(meta).map(|()| None);
    }
    match meta.value()?.parse::<syn::Expr>()? {
        syn::Expr::Array(array) => {
            let mut out = Vec::new();
            for elem in &array.elems {
                match elem {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(s),
                        ..
                    }) => out.push(s.clone()),
                    other => errors.spanned(other, "expected a category name in a string"),
                }
            }
            Ok(Some(out))
        }
        other => {
            errors.spanned(other, example);
            Ok(None)
        }
    }
}

/// `()` (or no return type) or `Result<(), E>`.
fn returns(errors: &mut Errors, sig: &syn::Signature, what: &str) -> Option<Returns> {
    let Some(ty) = handler::output(sig) else {
        return Some(Returns::Unit);
    };
    if handler::is_unit(ty) {
        return Some(Returns::Unit);
    }
    match handler::result_ok(ty) {
        Some(ok) if handler::is_unit(ok) => Some(Returns::Result(syn::spanned::Spanned::span(ty))),
        _ => {
            errors.spanned(
                ty,
                format_args!(
                    "{what} `{}` must return `()` or `Result<(), E>` where `E: Into<BoxError>`",
                    sig.ident
                ),
            );
            None
        }
    }
}

/// The checks every method of the block shares: async, not generic, `&self`.
fn method_shape(errors: &mut Errors, sig: &syn::Signature, what: &str) -> bool {
    let mut ok = true;
    if sig.asyncness.is_none() {
        errors.spanned(
            sig.fn_token,
            format_args!("{what} `{}` must be `async`", sig.ident),
        );
        ok = false;
    }
    handler::not_generic(errors, sig, what);
    ok & handler::shared_self(errors, sig, what)
}

/// The last segment of a type's path, through a reference: `PgTransaction` for
/// `&factum_postgres::PgTransaction<'_>`.
fn type_name(ty: &syn::Type) -> Option<String> {
    let ty = match ty {
        syn::Type::Reference(r) => &*r.elem,
        other => other,
    };
    handler::type_path(ty)
        .and_then(common::last_ident)
        .map(ToString::to_string)
}

/// Whether a type reads as a transaction: a path ending in `PgTransaction` or `Transaction`,
/// or a reference to one.
fn is_transaction(ty: &syn::Type) -> bool {
    type_name(ty).is_some_and(|name| name == "PgTransaction" || name == "Transaction")
}

/// The transaction argument of a transactional projection's method, which must be a shared
/// reference.
fn transaction_arg(
    errors: &mut Errors,
    sig: &syn::Signature,
    ty: &syn::Type,
    what: &str,
) -> Option<syn::Type> {
    match ty {
        // `tokio_postgres::Transaction` (or the pool's): the type before `PgTransaction`.
        syn::Type::Reference(_) if type_name(ty).is_some_and(|name| name == "Transaction") => {
            errors.spanned(
                ty,
                format_args!(
                    "{what} `{}` of a `transactional` projection takes `&factum_postgres::PgTransaction<'_>`, not `&Transaction<'_>`: it dereferences to `tokio_postgres::Transaction`, sets the store's schema as the `search_path` and prepares each SQL text once per transaction",
                    sig.ident
                ),
            );
            None
        }
        syn::Type::Reference(r) if r.mutability.is_none() => Some(ty.clone()),
        _ => {
            errors.spanned(
                ty,
                format_args!(
                    "{what} `{}` of a `transactional` projection takes the transaction first, as `&PgTransaction<'_>`",
                    sig.ident
                ),
            );
            None
        }
    }
}

fn parse_handler(
    errors: &mut Errors,
    sig: &syn::Signature,
    transactional: bool,
) -> Option<Handler> {
    let shape_ok = method_shape(errors, sig, HANDLER);
    let args = handler::typed_args(sig);
    if !transactional {
        if let Some(first) = args.first().filter(|arg| is_transaction(&arg.ty)) {
            errors.spanned(
                &first.ty,
                format_args!(
                    "{HANDLER} `{}` takes a transaction: add `transactional` to the attribute, `#[projection(name = \"...\", transactional)]`, to generate a `factum_postgres::PgProjection`",
                    sig.ident
                ),
            );
            return None;
        }
    }
    if !argument_order(errors, sig, &args, transactional) {
        return None;
    }
    let skip = usize::from(transactional);
    let count_ok = handler::arg_count(errors, sig, 1 + skip, 2 + skip, |n| {
        if transactional {
            format!(
                "{HANDLER} `{}` of a `transactional` projection takes `&PgTransaction<'_>`, `&Event` and optionally `&RecordedEvent` after `&self`, found {}; every method of a `#[projection]` impl block handles an event: move helpers to another `impl` block",
                sig.ident,
                handler::arguments(n)
            )
        } else {
            format!(
                "{HANDLER} `{}` takes `&Event` and optionally `&RecordedEvent` after `&self`, found {}; every method of a `#[projection]` impl block handles an event: move helpers to another `impl` block",
                sig.ident,
                handler::arguments(n)
            )
        }
    });
    let tx = if count_ok && transactional {
        args.first()
            .and_then(|arg| transaction_arg(errors, sig, &arg.ty, HANDLER))
    } else {
        None
    };
    let event = if count_ok {
        args.get(skip)
            .and_then(|arg| handler::event_ref(errors, sig, &arg.ty, HANDLER))
    } else {
        None
    };
    if let (true, Some(recorded)) = (count_ok, args.get(1 + skip)) {
        handler::shared_ref(errors, sig, &recorded.ty, HANDLER, "&RecordedEvent");
    }
    let returns = returns(errors, sig, HANDLER);
    match (shape_ok, event, returns) {
        (true, Some(event), Some(returns)) if tx.is_some() == transactional => Some(Handler {
            method: sig.ident.clone(),
            tx,
            event,
            recorded: args.get(1 + skip).map(|arg| (*arg.ty).clone()),
            returns,
        }),
        _ => None,
    }
}

/// Reports a handler whose arguments are out of order: `&RecordedEvent` where the event goes,
/// or, in a transactional projection, the transaction anywhere but first. `false` when it did.
fn argument_order(
    errors: &mut Errors,
    sig: &syn::Signature,
    args: &[&syn::PatType],
    transactional: bool,
) -> bool {
    let skip = usize::from(transactional);
    let misplaced = args.iter().enumerate().find(|(at, arg)| {
        (transactional && *at > 0 && is_transaction(&arg.ty))
            || (*at <= skip && handler::is_recorded(&arg.ty) && !is_transaction(&arg.ty))
    });
    let Some((_, arg)) = misplaced else {
        return true;
    };
    let event = handler::suggested_event(args, |ty| is_transaction(ty) || handler::is_recorded(ty));
    let name = &sig.ident;
    let message = if transactional {
        format!(
            "{HANDLER} `{name}` of a `transactional` projection takes the transaction first, then the event, then optionally `&RecordedEvent`: `async fn {name}(&self, tx: &Transaction<'_>, event: {event}, recorded: &RecordedEvent)`"
        )
    } else {
        format!(
            "{HANDLER} `{name}` takes the event first, then optionally `&RecordedEvent`, which is the stored envelope and not an event: `async fn {name}(&self, event: {event}, recorded: &RecordedEvent)`"
        )
    };
    errors.spanned(&arg.ty, message);
    false
}

fn parse_reset(errors: &mut Errors, sig: &syn::Signature, transactional: bool) -> Option<Reset> {
    const WHAT: &str = "`#[reset]` method";
    let shape_ok = method_shape(errors, sig, WHAT);
    let count = usize::from(transactional);
    let count_ok = handler::arg_count(errors, sig, count, count, |n| {
        if transactional {
            format!(
                "{WHAT} `{}` of a `transactional` projection takes `&PgTransaction<'_>` after `&self`, found {}",
                sig.ident,
                handler::arguments(n)
            )
        } else {
            format!(
                "{WHAT} `{}` takes no argument besides `&self`, found {}",
                sig.ident,
                handler::arguments(n)
            )
        }
    });
    let tx = if count_ok && transactional {
        handler::typed_args(sig)
            .first()
            .and_then(|arg| transaction_arg(errors, sig, &arg.ty, WHAT))
    } else {
        None
    };
    let returns = returns(errors, sig, WHAT);
    match (shape_ok && count_ok, returns) {
        (true, Some(returns)) if tx.is_some() == transactional => Some(Reset {
            method: sig.ident.clone(),
            tx,
            returns,
        }),
        _ => None,
    }
}
