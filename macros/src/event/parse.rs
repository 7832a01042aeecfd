//! The `#[event]` IR: the struct and its parsed arguments.

use proc_macro2::TokenStream;

use super::ATTR;
use crate::common::{self, Errors, key};

/// One JSON-level upcaster: `upcast_json(from = 1, with = path)`.
pub(super) struct JsonStep {
    /// The version it reads.
    pub(super) from: u32,
    /// The `from` literal, for errors.
    pub(super) from_lit: syn::LitInt,
    /// `fn(serde_json::Value) -> Result<serde_json::Value, E>`.
    pub(super) with: syn::Path,
}

/// The arguments of `#[event(...)]`.
#[derive(Default)]
pub(super) struct Args {
    pub(super) name: Option<syn::LitStr>,
    pub(super) version: Option<(u32, syn::LitInt)>,
    pub(super) upcast_to: Option<syn::Path>,
    pub(super) upcast_with: Option<syn::Path>,
    pub(super) previous: Option<syn::Path>,
    pub(super) upcast_json: Vec<JsonStep>,
}

/// A field marked `#[personal(subject = <field>)]`.
pub(super) struct PersonalField {
    /// The field.
    pub(super) ident: syn::Ident,
    /// Its type.
    pub(super) ty: syn::Type,
    /// The field holding the subject's id.
    pub(super) subject: syn::Ident,
}

/// An `#[event]` struct.
pub(super) struct Input {
    pub(super) args: Args,
    /// The struct, without its `#[personal]` attributes.
    pub(super) item: syn::ItemStruct,
    /// Its `#[personal]` fields.
    pub(super) personal: Vec<PersonalField>,
}

impl Input {
    /// The stored name.
    pub(super) fn name(&self) -> String {
        self.args
            .name
            .as_ref()
            .map_or_else(|| self.item.ident.to_string(), syn::LitStr::value)
    }

    /// The schema version.
    pub(super) fn version(&self) -> u32 {
        self.args.version.as_ref().map_or(1, |(v, _)| *v)
    }
}

const KEYS: &[&str] = &[
    key::NAME,
    key::VERSION,
    key::UPCAST_TO,
    key::UPCAST_WITH,
    key::PREVIOUS,
    key::UPCAST_JSON,
];

/// Parses the item and the arguments, recording errors in `errors`; `None` when the item is
/// not a struct.
pub(super) fn parse(
    errors: &mut Errors,
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<Option<Input>> {
    let mut personal = Vec::new();
    let item = match syn::parse2::<syn::Item>(item)? {
        syn::Item::Struct(mut s) => {
            personal = personal_fields(errors, &mut s);
            Some(s)
        }
        other => {
            errors.push(common::wrong_item(&other, ATTR, "a struct"));
            None
        }
    };
    let mut parsed = Args::default();
    let result = common::parse_args(args, |meta| {
        if meta.path.is_ident(key::NAME) {
            let v = common::lit_str(errors, &meta, ATTR)?;
            common::set(errors, &mut parsed.name, v, &meta, ATTR);
        } else if meta.path.is_ident(key::VERSION) {
            let v = common::lit_positive(errors, &meta, ATTR)?;
            common::set(errors, &mut parsed.version, v, &meta, ATTR);
        } else if meta.path.is_ident(key::UPCAST_TO) {
            let v = common::path(errors, &meta, ATTR)?;
            common::set(errors, &mut parsed.upcast_to, v, &meta, ATTR);
        } else if meta.path.is_ident(key::UPCAST_WITH) {
            let v = common::path(errors, &meta, ATTR)?;
            common::set(errors, &mut parsed.upcast_with, v, &meta, ATTR);
        } else if meta.path.is_ident(key::PREVIOUS) {
            let v = common::path(errors, &meta, ATTR)?;
            common::set(errors, &mut parsed.previous, v, &meta, ATTR);
        } else if meta.path.is_ident(key::UPCAST_JSON) {
            if let Some(step) = json_step(errors, &meta)? {
                parsed.upcast_json.push(step);
            }
        } else {
            common::unknown_key(errors, &meta, ATTR, KEYS)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    }
    Ok(item.map(|item| Input {
        args: parsed,
        item,
        personal,
    }))
}

/// Takes the `#[personal(subject = <field>)]` attributes off the struct's fields.
fn personal_fields(errors: &mut Errors, item: &mut syn::ItemStruct) -> Vec<PersonalField> {
    let mut found = Vec::new();
    for field in &mut item.fields {
        let mut seen = false;
        let mut kept = Vec::with_capacity(field.attrs.len());
        for attr in std::mem::take(&mut field.attrs) {
            if !attr.path().is_ident(key::PERSONAL) {
                kept.push(attr);
                continue;
            }
            if seen {
                errors.spanned(&attr, "duplicate `#[personal]` on one field");
                continue;
            }
            seen = true;
            let Some(ident) = field.ident.clone() else {
                errors.spanned(&attr, "`#[personal]` goes on a named field");
                continue;
            };
            if let Some(subject) = personal_subject(errors, &attr) {
                found.push(PersonalField {
                    ident,
                    ty: field.ty.clone(),
                    subject,
                });
            }
        }
        field.attrs = kept;
    }
    found
}

/// The `subject = <field>` of a `#[personal(...)]` attribute.
fn personal_subject(errors: &mut Errors, attr: &syn::Attribute) -> Option<syn::Ident> {
    const NEEDS: &str = "`#[personal]` needs `subject = <field>`: the field holding the id of the person the data belongs to";
    if !matches!(attr.meta, syn::Meta::List(_)) {
        errors.spanned(attr, NEEDS);
        return None;
    }
    let mut subject: Option<syn::Ident> = None;
    let result = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident(key::SUBJECT) {
            let ident: syn::Ident = meta.value()?.parse()?;
            if subject.is_some() {
                errors.spanned(&meta.path, "duplicate `subject`");
            }
            subject = Some(ident);
            Ok(())
        } else {
            common::unknown_key(errors, &meta, "personal", &[key::SUBJECT])
        }
    });
    if let Err(e) = result {
        errors.push(e);
        return None;
    }
    if subject.is_none() {
        errors.spanned(attr, NEEDS);
    }
    subject
}

/// Parses `upcast_json(from = N, with = path)`.
fn json_step(
    errors: &mut Errors,
    meta: &syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<Option<JsonStep>> {
    const ATTR_JSON: &str = "event(upcast_json";
    if !meta.input.peek(syn::token::Paren) {
        errors.spanned(
            &meta.path,
            "expected `upcast_json(from = <version>, with = <function>)`",
        );
        return common::skip_value(meta).map(|()| None);
    }
    let mut from = None;
    let mut with = None;
    let outer = meta.path.clone();
    meta.parse_nested_meta(|inner| {
        if inner.path.is_ident(key::FROM) {
            let v = common::lit_positive(errors, &inner, ATTR_JSON)?;
            common::set(errors, &mut from, v, &inner, ATTR_JSON);
        } else if inner.path.is_ident(key::WITH) {
            let v = common::path(errors, &inner, ATTR_JSON)?;
            common::set(errors, &mut with, v, &inner, ATTR_JSON);
        } else {
            common::unknown_key(
                errors,
                &inner,
                "event(upcast_json(..))",
                &[key::FROM, key::WITH],
            )?;
        }
        Ok(())
    })?;
    match (from, with) {
        (Some((from, from_lit)), Some(with)) => Ok(Some(JsonStep {
            from,
            from_lit,
            with,
        })),
        (None, _) => {
            errors.spanned(&outer, "`upcast_json` needs `from = <version>`");
            Ok(None)
        }
        (_, None) => {
            errors.spanned(&outer, "`upcast_json` needs `with = <function>`");
            Ok(None)
        }
    }
}
