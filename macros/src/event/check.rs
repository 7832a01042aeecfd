//! Rules across the `#[event]` arguments.

use quote::ToTokens;

use super::ATTR;
use super::parse::Input;
use crate::common::{self, Errors};

/// The longest stored type name the stores accept.
const MAX_NAME_LEN: usize = 255;

pub(super) fn check(errors: &mut Errors, input: &Input) {
    let args = &input.args;
    common::no_generics(errors, &input.item.generics, ATTR);
    if let Some(name) = &args.name {
        let value = name.value();
        if value.is_empty() || value.len() > MAX_NAME_LEN {
            errors.spanned(
                name,
                format_args!("an event name has 1 to {MAX_NAME_LEN} bytes"),
            );
        }
    }
    if let (Some(with), None) = (&args.upcast_with, &args.upcast_to) {
        errors.spanned(
            with,
            "`upcast_with` needs `upcast_to = <next version's type>`",
        );
    }
    let ident = &input.item.ident;
    for path in [&args.previous, &args.upcast_to].into_iter().flatten() {
        if path.is_ident(ident) {
            errors.spanned(
                path,
                format_args!("`{ident}` cannot precede or follow itself in an upcast chain"),
            );
        }
    }
    if let (Some(previous), Some(first)) = (&args.previous, args.upcast_json.first()) {
        errors.spanned(
            previous,
            "`previous` and `upcast_json` cannot be combined: read older versions either through a typed previous version or through JSON upcasters",
        );
        errors.spanned(&first.with, "`upcast_json` declared here");
    }
    check_json_steps(errors, input);
    check_personal(errors, input);
}

/// Each `#[personal]` subject is another field of the struct, not itself personal, and the
/// JSON names are the Rust names (no serde renaming).
fn check_personal(errors: &mut Errors, input: &Input) {
    if input.personal.is_empty() {
        return;
    }
    let ident = &input.item.ident;
    let named = |name: &syn::Ident| {
        input
            .item
            .fields
            .iter()
            .find(|f| f.ident.as_ref() == Some(name))
    };
    for field in &input.personal {
        let subject = &field.subject;
        match named(subject) {
            None => errors.spanned(
                subject,
                format_args!(
                    "no field `{subject}` in `{ident}`: `subject` names the field holding the id of the person the data belongs to"
                ),
            ),
            Some(_) if input.personal.iter().any(|p| p.ident == *subject) => errors.spanned(
                subject,
                format_args!("the subject `{subject}` is itself `#[personal]`: a subject's id stays readable, to find its key"),
            ),
            Some(_) => {}
        }
        for name in [&field.ident, subject] {
            let renamed = named(name).is_some_and(|f| f.attrs.iter().any(renames));
            if renamed {
                errors.spanned(
                    name,
                    "`#[personal]` fields and their subjects are stored under their Rust names: remove the serde renaming",
                );
            }
        }
    }
    if let Some(attr) = input.item.attrs.iter().find(|a| renames(a)) {
        errors.spanned(
            attr,
            "`#[personal]` fields and their subjects are stored under their Rust names: remove the serde renaming",
        );
    }
}

/// Whether a `#[serde(...)]` attribute renames (`rename`, `rename_all`, `alias`) or flattens.
fn renames(attr: &syn::Attribute) -> bool {
    if !attr.path().is_ident("serde") {
        return false;
    }
    let text = attr.meta.to_token_stream().to_string();
    ["rename", "alias", "flatten"]
        .iter()
        .any(|k| text.contains(k))
}

/// JSON upcasters must read distinct versions below this one, with no gap up to it.
fn check_json_steps(errors: &mut Errors, input: &Input) {
    let version = input.version();
    let mut seen = Vec::new();
    for step in &input.args.upcast_json {
        if step.from >= version {
            errors.spanned(
                &step.from_lit,
                format_args!(
                    "`upcast_json` reads versions older than this event's version {version}"
                ),
            );
        } else if seen.contains(&step.from) {
            errors.spanned(
                &step.from_lit,
                format_args!("duplicate `upcast_json` from version {}", step.from),
            );
        } else {
            seen.push(step.from);
        }
    }
    if input.args.previous.is_some() {
        return;
    }
    if let Some(lowest) = seen.iter().min() {
        for missing in *lowest..version {
            if !seen.contains(&missing) {
                errors.spanned(
                    &input.item.ident,
                    format_args!(
                        "gap in the upcast chain of `{}`: no `upcast_json` from version {missing}",
                        input.item.ident
                    ),
                );
            }
        }
    }
}
