//! The `#[command]` IR.

use proc_macro2::TokenStream;

use super::ATTR;
use crate::common::{self, Errors, key};

/// The arguments of `#[command(...)]`.
#[derive(Default)]
pub(super) struct Args {
    pub(super) name: Option<syn::LitStr>,
    pub(super) version: Option<(u32, syn::LitInt)>,
    pub(super) validate: Option<syn::Path>,
}

/// A `#[command]` struct, with its `#[id]` field removed from the attributes.
pub(super) struct Input {
    pub(super) args: Args,
    pub(super) item: syn::ItemStruct,
    /// The `#[id]` field: its member (name or index) and type.
    pub(super) id: Option<(syn::Member, syn::Type)>,
    /// Stored name and version, filled by `check`.
    pub(super) name: String,
    pub(super) version: u32,
}

const KEYS: &[&str] = &[key::NAME, key::VERSION, key::VALIDATE];

/// Parses the item and the arguments, recording errors in `errors`; `None` when the item is
/// not a struct.
pub(super) fn parse(
    errors: &mut Errors,
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<Option<Input>> {
    let mut item = match syn::parse2::<syn::Item>(item)? {
        syn::Item::Struct(s) => Some(s),
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
        } else if meta.path.is_ident(key::VALIDATE) {
            let v = common::path(errors, &meta, ATTR)?;
            common::set(errors, &mut parsed.validate, v, &meta, ATTR);
        } else {
            common::unknown_key(errors, &meta, ATTR, KEYS)?;
        }
        Ok(())
    });
    if let Err(e) = result {
        errors.push(e);
    }
    let id = item.as_mut().and_then(|item| id_field(errors, item));
    Ok(item.map(|item| Input {
        args: parsed,
        item,
        id,
        name: String::new(),
        version: 1,
    }))
}

/// Finds the field marked `#[id]` and removes the marker.
fn id_field(errors: &mut Errors, item: &mut syn::ItemStruct) -> Option<(syn::Member, syn::Type)> {
    let mut found: Option<(syn::Member, syn::Type)> = None;
    for (index, field) in item.fields.iter_mut().enumerate() {
        let mut marked = None;
        field.attrs.retain(|attr| {
            if common::is_helper(errors, attr, key::ID) {
                marked = Some(attr.clone());
                false
            } else {
                true
            }
        });
        let Some(attr) = marked else { continue };
        if found.is_some() {
            errors.spanned(
                &attr,
                "duplicate `#[id]` field: a command targets one aggregate",
            );
            continue;
        }
        let member = match &field.ident {
            Some(ident) => syn::Member::Named(ident.clone()),
            None => syn::Member::Unnamed(syn::Index::from(index)),
        };
        found = Some((member, field.ty.clone()));
    }
    found
}
