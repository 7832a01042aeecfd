//! Rules across the handlers of a `#[process_manager]` impl block.

use std::collections::HashMap;

use super::parse::{Input, RouteKind};
use crate::common::{self, Errors, key};

/// An impl block whose handlers fit together.
pub(super) struct Checked {
    pub(super) input: Input,
    /// The instances' state.
    pub(super) state: syn::Type,
    /// The commands dispatched.
    pub(super) command: syn::Type,
}

pub(super) fn check(input: Input) -> syn::Result<Checked> {
    let mut errors = Errors::default();
    let self_ty = &input.item.self_ty;
    if !input
        .handlers
        .iter()
        .any(|h| matches!(h.route, RouteKind::Start | RouteKind::StartStrict))
    {
        errors.spanned(
            self_ty,
            format_args!(
                "`#[process_manager]` impl of `{}` has no `#[start(by = ...)]` handler: no instance would ever start",
                common::display(self_ty)
            ),
        );
    }

    let mut handled: HashMap<String, &syn::Ident> = HashMap::new();
    for handler in &input.handlers {
        let name = common::display(&handler.event);
        match handled.get(&name) {
            Some(first) => errors.spanned(
                &handler.event,
                format_args!(
                    "`{name}` has two handlers: `{first}` and `{}`; an event type is routed one way",
                    handler.method
                ),
            ),
            None => {
                handled.insert(name, &handler.method);
            }
        }
    }

    let hooks = input.on_rejected.iter().chain(&input.on_timeout);
    let states = input
        .handlers
        .iter()
        .map(|h| (&h.method, &h.state))
        .chain(hooks.clone().map(|h| (&h.method, &h.state)));
    let state = agree(&mut errors, input.state.as_ref(), states, key::STATE);

    let commands = input
        .handlers
        .iter()
        .filter_map(|h| Some((&h.method, h.returns.shape.command()?)))
        .chain(hooks.filter_map(|h| Some((&h.method, h.returns.shape.command()?))));
    let command = agree(&mut errors, input.command.as_ref(), commands, key::COMMAND);
    if state.is_none() && input.state.is_none() && !input.handlers.is_empty() {
        errors.spanned(
            self_ty,
            "cannot tell the state type: set `#[process_manager(state = ...)]`",
        );
    }
    if command.is_none() {
        errors.spanned(
            self_ty,
            "cannot tell the command type: no handler returns commands; set `#[process_manager(command = ...)]`",
        );
    }
    errors.finish()?;
    match (state, command) {
        (Some(state), Some(command)) => Ok(Checked {
            input,
            state,
            command,
        }),
        _ => Err(syn::Error::new_spanned(
            &input.item.self_ty,
            "cannot tell the state and command types",
        )),
    }
}

/// The type given in the attribute, or the one every method agrees on.
fn agree<'a>(
    errors: &mut Errors,
    given: Option<&syn::Type>,
    found: impl Iterator<Item = (&'a syn::Ident, &'a syn::Type)>,
    key: &str,
) -> Option<syn::Type> {
    if let Some(given) = given {
        return Some(given.clone());
    }
    let mut first: Option<(&syn::Ident, &syn::Type)> = None;
    for (method, ty) in found {
        match first {
            None => first = Some((method, ty)),
            Some((first_method, first_ty)) if common::display(first_ty) != common::display(ty) => {
                errors.spanned(
                    ty,
                    format_args!(
                        "handlers disagree on the {key} type: `{method}` uses `{}` but `{first_method}` uses `{}`; use one type or set `#[process_manager({key} = ...)]`",
                        common::display(ty),
                        common::display(first_ty),
                    ),
                );
            }
            Some(_) => {}
        }
    }
    first.map(|(_, ty)| ty.clone())
}
