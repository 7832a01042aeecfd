//! Rules across the handlers and apply methods of an `#[aggregate]` impl block.

use std::collections::HashMap;

use quote::format_ident;

use super::parse::{Emits, ImplInput};
use crate::common::{self, Errors};

/// An impl block whose handlers and apply methods fit together.
pub(super) struct Checked {
    pub(super) input: ImplInput,
    /// The domain error type.
    pub(super) error: syn::Type,
    /// `{Aggregate}Event`.
    pub(super) event_enum: syn::Ident,
    /// `{Aggregate}Command`.
    pub(super) command_enum: syn::Ident,
}

pub(super) fn check(mut input: ImplInput) -> syn::Result<Checked> {
    let mut errors = Errors::default();
    let event_enum = format_ident!("{}Event", input.ident);
    let command_enum = format_ident!("{}Command", input.ident);

    for handler in &mut input.handlers {
        match &handler.emits {
            Emits::Many(inner) if inner.path.is_ident(&event_enum) => handler.emits = Emits::Set,
            Emits::One(inner) if inner.path.is_ident(&event_enum) => {
                handler.emits = Emits::SetOne;
            }
            _ => {}
        }
    }

    if input.handlers.is_empty() {
        errors.spanned(
            &input.item.self_ty,
            format_args!(
                "`#[aggregate]` impl of `{}` has no `#[handle]` method: mark at least one command handler",
                input.ident
            ),
        );
    }

    let mut commands: HashMap<String, &syn::Ident> = HashMap::new();
    for handler in &input.handlers {
        let Some(name) = common::last_ident(&handler.command) else {
            continue;
        };
        match commands.get(&name.to_string()) {
            Some(first) => errors.spanned(
                &handler.command,
                format_args!(
                    "`{name}` has two handlers: `{first}` and `{}`; a command has one handler",
                    handler.method
                ),
            ),
            None => {
                commands.insert(name.to_string(), &handler.method);
            }
        }
    }

    let mut applied: HashMap<String, &syn::Ident> = HashMap::new();
    for apply in &input.applies {
        let Some(name) = common::last_ident(&apply.event) else {
            continue;
        };
        match applied.get(&name.to_string()) {
            Some(first) => errors.spanned(
                &apply.event,
                format_args!(
                    "`{name}` has two `#[apply]` methods: `{first}` and `{}`",
                    apply.method
                ),
            ),
            None => {
                applied.insert(name.to_string(), &apply.method);
            }
        }
    }

    for handler in &input.handlers {
        for event in handler.emits.types() {
            let Some(name) = common::last_ident(event) else {
                continue;
            };
            if event.path.is_ident(&event_enum) {
                continue;
            }
            if !applied.contains_key(&name.to_string()) {
                errors.spanned(
                    event,
                    format_args!(
                        "`{name}` is returned by `{}` but no `#[apply]` method takes `&{name}`",
                        handler.method
                    ),
                );
            }
        }
    }

    let error = match &input.error {
        Some(error) => Some(error.clone()),
        None => {
            let mut first: Option<(&syn::Type, &syn::Ident)> = None;
            for handler in &input.handlers {
                match first {
                    None => first = Some((&handler.error, &handler.method)),
                    Some((ty, method))
                        if common::display(ty) != common::display(&handler.error) =>
                    {
                        errors.spanned(
                            &handler.error,
                            format_args!(
                                "handlers disagree on the error type: `{}` returns `{}` but `{method}` returns `{}`; use one type or set `#[aggregate(error = ...)]`",
                                handler.method,
                                common::display(&handler.error),
                                common::display(ty),
                            ),
                        );
                    }
                    Some(_) => {}
                }
            }
            first.map(|(ty, _)| ty.clone())
        }
    };
    errors.finish()?;
    let error = error.ok_or_else(|| {
        syn::Error::new_spanned(
            &input.item.self_ty,
            "no error type: set `#[aggregate(error = ...)]`",
        )
    })?;
    Ok(Checked {
        input,
        error,
        event_enum,
        command_enum,
    })
}
