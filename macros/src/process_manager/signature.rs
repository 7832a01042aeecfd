//! The shapes of `#[process_manager]` methods: routed handlers, `#[on_rejected]`,
//! `#[on_timeout]`, and what they return.

use proc_macro2::Span;
use syn::spanned::Spanned;

use crate::common::{self, Errors};
use crate::handler;

/// What a handler or hook returns, turned into `Effects<Command>` by the generated code.
pub(super) struct Returns {
    pub(super) shape: Shape,
    /// Whether it is wrapped in `Result<_, E>`.
    pub(super) fallible: bool,
    /// The return type's span (the method name's when it returns nothing).
    pub(super) span: Span,
}

/// The success value of a handler or hook.
pub(super) enum Shape {
    /// `()`: no effect.
    Nothing,
    /// `Effects<C>`: commands, timeouts, completion.
    Effects(syn::Type),
    /// `Vec<C>`: commands, in order.
    Vec(syn::Type),
    /// `Option<C>`: zero or one command.
    Option(syn::Type),
    /// `C`: one command.
    One(syn::Type),
}

impl Shape {
    /// The command type it carries.
    pub(super) fn command(&self) -> Option<&syn::Type> {
        match self {
            Shape::Nothing => None,
            Shape::Effects(c) | Shape::Vec(c) | Shape::Option(c) | Shape::One(c) => Some(c),
        }
    }
}

/// The argument shapes of a routed handler.
pub(super) struct HandlerShape {
    pub(super) state: syn::Type,
    pub(super) event: syn::TypePath,
    pub(super) recorded: Option<syn::Type>,
    pub(super) returns: Returns,
}

const HANDLER: &str = "process manager handler";

/// Synchronous, not generic, `&self`.
fn method_shape(errors: &mut Errors, sig: &syn::Signature, what: &str) -> bool {
    let mut ok = true;
    if let Some(a) = &sig.asyncness {
        errors.spanned(
            a,
            format_args!(
                "{what} `{}` cannot be async: it decides effects from the state and the event, and the runtime dispatches them",
                sig.ident
            ),
        );
        ok = false;
    }
    handler::not_generic(errors, sig, what);
    ok & handler::shared_self(errors, sig, what)
}

/// The `State` of a `&mut State` argument.
fn state_arg(
    errors: &mut Errors,
    sig: &syn::Signature,
    ty: &syn::Type,
    what: &str,
) -> Option<syn::Type> {
    match ty {
        syn::Type::Reference(r) if r.mutability.is_some() => Some((*r.elem).clone()),
        other => {
            errors.spanned(
                other,
                format_args!(
                    "{what} `{}` takes the instance's state as `&mut State` here",
                    sig.ident
                ),
            );
            None
        }
    }
}

/// `fn(&self, state: &mut State, event: &Event[, recorded: &RecordedEvent]) -> Returns`.
pub(super) fn handler(errors: &mut Errors, sig: &syn::Signature) -> Option<HandlerShape> {
    let shape_ok = method_shape(errors, sig, HANDLER);
    let count_ok = handler::arg_count(errors, sig, 2, 3, |n| {
        format!(
            "{HANDLER} `{}` takes `state: &mut State`, `event: &Event` and optionally `&RecordedEvent` after `&self`, found {}",
            sig.ident,
            handler::arguments(n)
        )
    });
    let args = handler::typed_args(sig);
    let order_ok = recorded_after_event(errors, sig, &args);
    let (state, event) = match (count_ok && order_ok, args.as_slice()) {
        (true, [state, event, ..]) => (
            state_arg(errors, sig, &state.ty, HANDLER),
            handler::event_ref(errors, sig, &event.ty, HANDLER),
        ),
        _ => (None, None),
    };
    if let (true, Some(recorded)) = (count_ok, args.get(2)) {
        handler::shared_ref(errors, sig, &recorded.ty, HANDLER, "&RecordedEvent");
    }
    let returns = returns(errors, sig, HANDLER);
    match (shape_ok, state, event, returns) {
        (true, Some(state), Some(event), Some(returns)) => Some(HandlerShape {
            state,
            event,
            recorded: args.get(2).map(|arg| (*arg.ty).clone()),
            returns,
        }),
        _ => None,
    }
}

/// Reports `&RecordedEvent` where the state or the event goes; `false` when it did.
fn recorded_after_event(errors: &mut Errors, sig: &syn::Signature, args: &[&syn::PatType]) -> bool {
    let Some(arg) = args
        .iter()
        .take(2)
        .find(|arg| handler::is_recorded(&arg.ty))
    else {
        return true;
    };
    let name = &sig.ident;
    let state = args
        .iter()
        .find(|arg| matches!(&*arg.ty, syn::Type::Reference(r) if r.mutability.is_some()))
        .map_or_else(|| "&mut State".to_owned(), |arg| common::display(&arg.ty));
    let event = handler::suggested_event(args, |ty| {
        handler::is_recorded(ty) || matches!(ty, syn::Type::Reference(r) if r.mutability.is_some())
    });
    errors.spanned(
        &arg.ty,
        format_args!(
            "{HANDLER} `{name}` takes the state first, then the event, then optionally `&RecordedEvent`, which is the stored envelope and not an event: `fn {name}(&self, state: {state}, event: {event}, recorded: &RecordedEvent)`"
        ),
    );
    false
}

/// `fn(&self, state: &mut State, command: &Command, error: &Rejection) -> Returns`.
pub(super) fn on_rejected(errors: &mut Errors, sig: &syn::Signature) -> Option<super::parse::Hook> {
    const WHAT: &str = "`#[on_rejected]` method";
    if let Some(error) = handler::typed_args(sig).get(2) {
        if let syn::Type::Reference(r) = &*error.ty {
            if matches!(&*r.elem, syn::Type::Path(p) if p.qself.is_none() && p.path.is_ident("str"))
            {
                errors.spanned(
                    &error.ty,
                    format_args!(
                        "{WHAT} `{}` takes the rejection as `&Rejection` (`factum::Rejection`), not `&str`: match the aggregate's error with `error.downcast_ref::<OrderError>()`, or read its text with `error.to_string()`",
                        sig.ident
                    ),
                );
                return None;
            }
        }
    }
    hook(
        errors,
        sig,
        WHAT,
        0,
        &[(1, "&Command"), (2, "&Rejection")],
        "`state: &mut State`, `command: &Command` and `error: &Rejection`",
    )
}

/// `fn(&self, key: &str, state: &mut State, name: &str) -> Returns`.
pub(super) fn on_timeout(errors: &mut Errors, sig: &syn::Signature) -> Option<super::parse::Hook> {
    const WHAT: &str = "`#[on_timeout]` method";
    hook(
        errors,
        sig,
        WHAT,
        1,
        &[(0, "&str"), (2, "&str")],
        "`key: &str`, `state: &mut State` and `name: &str`",
    )
}

/// A hook with three arguments after `&self`: the state at `state_at`, shared references
/// elsewhere.
fn hook(
    errors: &mut Errors,
    sig: &syn::Signature,
    what: &str,
    state_at: usize,
    shared: &[(usize, &str)],
    expected: &str,
) -> Option<super::parse::Hook> {
    let shape_ok = method_shape(errors, sig, what);
    let count_ok = handler::arg_count(errors, sig, 3, 3, |n| {
        format!(
            "{what} `{}` takes {expected} after `&self`, found {}",
            sig.ident,
            handler::arguments(n)
        )
    });
    let args = handler::typed_args(sig);
    let state = if count_ok {
        args.get(state_at)
            .and_then(|arg| state_arg(errors, sig, &arg.ty, what))
    } else {
        None
    };
    if count_ok {
        for (at, expected) in shared {
            if let Some(arg) = args.get(*at) {
                handler::shared_ref(errors, sig, &arg.ty, what, expected);
            }
        }
    }
    let returns = returns(errors, sig, what);
    match (shape_ok, state, returns) {
        (true, Some(state), Some(returns)) => Some(super::parse::Hook {
            method: sig.ident.clone(),
            state,
            returns,
        }),
        _ => None,
    }
}

/// `Effects<C>`, `Vec<C>`, `Option<C>`, `C` or `()`, optionally in `Result<_, E>`.
fn returns(errors: &mut Errors, sig: &syn::Signature, what: &str) -> Option<Returns> {
    let span = handler::output_span(sig);
    let Some(ty) = handler::output(sig) else {
        return Some(Returns {
            shape: Shape::Nothing,
            fallible: false,
            span,
        });
    };
    let (ok, fallible) = match handler::result_ok(ty) {
        Some(ok) => (ok, true),
        None => (ty, false),
    };
    let shape = if handler::is_unit(ok) {
        Some(Shape::Nothing)
    } else if let Some(c) = handler::single_generic(ok, "Effects") {
        Some(Shape::Effects(c.clone()))
    } else if let Some(c) = handler::single_generic(ok, "Vec") {
        Some(Shape::Vec(c.clone()))
    } else if let Some(c) = handler::single_generic(ok, "Option") {
        Some(Shape::Option(c.clone()))
    } else if handler::type_path(ok).is_some() && handler::result_ok(ok).is_none() {
        Some(Shape::One(ok.clone()))
    } else {
        None
    };
    if shape.is_none() {
        errors.spanned(
            ok,
            format_args!(
                "{what} `{}` must return `Effects<Command>`, `Vec<Command>`, `Option<Command>`, a command or `()`, optionally as `Result<_, E>`; found `{}`",
                sig.ident,
                common::display(ok)
            ),
        );
    }
    shape.map(|shape| Returns {
        shape,
        fallible,
        span: ty.span(),
    })
}
