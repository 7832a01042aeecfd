//! Helpers shared by the macros: error accumulation, attribute keys and value parsing.

use std::fmt::Display;

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;

/// Attribute keys, named once (serde's `symbol.rs`).
pub(crate) mod key {
    pub(crate) const NAME: &str = "name";
    pub(crate) const VERSION: &str = "version";
    pub(crate) const UPCAST_TO: &str = "upcast_to";
    pub(crate) const UPCAST_WITH: &str = "upcast_with";
    pub(crate) const PREVIOUS: &str = "previous";
    pub(crate) const UPCAST_JSON: &str = "upcast_json";
    pub(crate) const FROM: &str = "from";
    pub(crate) const WITH: &str = "with";
    pub(crate) const VALIDATE: &str = "validate";
    pub(crate) const ID: &str = "id";
    pub(crate) const CATEGORY: &str = "category";
    pub(crate) const SNAPSHOT_EVERY: &str = "snapshot_every";
    pub(crate) const STATE_VERSION: &str = "state_version";
    pub(crate) const ERROR: &str = "error";
    pub(crate) const VIS: &str = "vis";
    pub(crate) const HANDLE: &str = "handle";
    pub(crate) const APPLY: &str = "apply";
    pub(crate) const CATEGORIES: &str = "categories";
    pub(crate) const RESET: &str = "reset";
    pub(crate) const TRANSACTIONAL: &str = "transactional";
    pub(crate) const SKIP_UNKNOWN_VERSIONS: &str = "skip_unknown_versions";
    pub(crate) const STATE: &str = "state";
    pub(crate) const COMMAND: &str = "command";
    pub(crate) const START: &str = "start";
    pub(crate) const ON: &str = "on";
    pub(crate) const STOP: &str = "stop";
    pub(crate) const BY: &str = "by";
    pub(crate) const STRICT: &str = "strict";
    pub(crate) const ON_REJECTED: &str = "on_rejected";
    pub(crate) const ON_TIMEOUT: &str = "on_timeout";
    pub(crate) const PERSONAL: &str = "personal";
    pub(crate) const SUBJECT: &str = "subject";
}

/// Collects every error so that all of them are reported at once.
#[derive(Default)]
pub(crate) struct Errors {
    error: Option<syn::Error>,
}

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.error {
            Some(e) => e.combine(error),
            None => self.error = Some(error),
        }
    }

    /// An error spanned on `tokens`.
    pub(crate) fn spanned(&mut self, tokens: impl ToTokens, message: impl Display) {
        self.push(syn::Error::new_spanned(tokens, message));
    }

    /// An error at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.error.map_or(Ok(()), Err)
    }
}

/// The key of `meta`, as written.
pub(crate) fn key_of(meta: &ParseNestedMeta<'_>) -> String {
    meta.path.to_token_stream().to_string().replace(' ', "")
}

/// Records `value` for a key, or reports a duplicate key.
pub(crate) fn set<T>(
    errors: &mut Errors,
    slot: &mut Option<T>,
    value: Option<T>,
    meta: &ParseNestedMeta<'_>,
    attr: &str,
) {
    let Some(value) = value else { return };
    if slot.is_some() {
        errors.spanned(
            &meta.path,
            format_args!("duplicate `#[{attr}({})]` key", key_of(meta)),
        );
    } else {
        *slot = Some(value);
    }
}

/// Skips the value of a key that is being reported as an error.
pub(crate) fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<syn::Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

/// Reports an unknown key, listing the known ones, and skips its value.
pub(crate) fn unknown_key(
    errors: &mut Errors,
    meta: &ParseNestedMeta<'_>,
    attr: &str,
    known: &[&str],
) -> syn::Result<()> {
    let list = known
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ");
    let expected = if known.len() == 1 { "" } else { "one of " };
    errors.spanned(
        &meta.path,
        format_args!(
            "unknown `#[{attr}]` key `{}`: expected {expected}{list}",
            key_of(meta)
        ),
    );
    skip_value(meta)
}

/// Reads `key = <expr>`, reporting a missing `=`.
fn value_expr(meta: &ParseNestedMeta<'_>, attr: &str) -> syn::Result<syn::Expr> {
    if !meta.input.peek(syn::Token![=]) {
        return Err(meta.error(format_args!("expected `#[{attr}({} = ...)]`", key_of(meta))));
    }
    meta.value()?.parse()
}

/// Reads `key = "string"`.
pub(crate) fn lit_str(
    errors: &mut Errors,
    meta: &ParseNestedMeta<'_>,
    attr: &str,
) -> syn::Result<Option<syn::LitStr>> {
    match value_expr(meta, attr)? {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(s),
            ..
        }) => Ok(Some(s)),
        other => {
            errors.spanned(
                other,
                format_args!("expected a string for `{}`", key_of(meta)),
            );
            Ok(None)
        }
    }
}

/// Reads `key = <positive integer>` that fits in `T`.
pub(crate) fn lit_positive<T>(
    errors: &mut Errors,
    meta: &ParseNestedMeta<'_>,
    attr: &str,
) -> syn::Result<Option<(T, syn::LitInt)>>
where
    T: std::str::FromStr + PartialEq + From<u8>,
    T::Err: Display,
{
    let key = key_of(meta);
    match value_expr(meta, attr)? {
        syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Int(i),
            ..
        }) => match i.base10_parse::<T>() {
            Ok(v) if v == T::from(0) => {
                errors.spanned(&i, format_args!("`{key}` starts at 1"));
                Ok(None)
            }
            Ok(v) => Ok(Some((v, i))),
            Err(e) => {
                errors.spanned(&i, format_args!("invalid `{key}`: {e}"));
                Ok(None)
            }
        },
        other => {
            errors.spanned(
                other,
                format_args!("expected a positive integer for `{key}`"),
            );
            Ok(None)
        }
    }
}

/// Reads `key = path::to::item`.
pub(crate) fn path(
    errors: &mut Errors,
    meta: &ParseNestedMeta<'_>,
    attr: &str,
) -> syn::Result<Option<syn::Path>> {
    match value_expr(meta, attr)? {
        syn::Expr::Path(p) if p.qself.is_none() && p.attrs.is_empty() => Ok(Some(p.path)),
        other => {
            errors.spanned(
                other,
                format_args!("expected a path for `{}`", key_of(meta)),
            );
            Ok(None)
        }
    }
}

/// The rule of `factum::validate_category`: 1 to 64 ASCII letters, digits or `_`.
pub(crate) fn check_category(errors: &mut Errors, category: &syn::LitStr) {
    let value = category.value();
    let valid = (1..=64).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !valid {
        errors.spanned(
            category,
            format_args!(
                "invalid category `{value}`: expected 1 to 64 ASCII letters, digits or `_`"
            ),
        );
    }
}

/// Checks the name of a projection or process manager: the key of its checkpoints and leases.
pub(crate) fn check_runtime_name(errors: &mut Errors, name: &syn::LitStr) {
    if name.value().trim().is_empty() {
        errors.spanned(
            name,
            "the name cannot be empty: it keys checkpoints and leases",
        );
    }
}

/// Parses an attribute's arguments with `parse_nested_meta`; an empty list is accepted.
pub(crate) fn parse_args(
    args: TokenStream,
    logic: impl FnMut(ParseNestedMeta<'_>) -> syn::Result<()>,
) -> syn::Result<()> {
    if args.is_empty() {
        return Ok(());
    }
    syn::parse::Parser::parse2(syn::meta::parser(logic), args)
}

/// Rejects generic parameters, which the macros do not support.
pub(crate) fn no_generics(errors: &mut Errors, generics: &syn::Generics, attr: &str) {
    if !generics.params.is_empty() || generics.where_clause.is_some() {
        let span = if generics.params.is_empty() {
            generics.where_clause.span()
        } else {
            generics.span()
        };
        errors.at(
            span,
            format_args!("`#[{attr}]` does not support generic parameters"),
        );
    }
}

/// Whether `attr` is the bare helper attribute `#[name]`; reports arguments given to it.
pub(crate) fn is_helper(errors: &mut Errors, attr: &syn::Attribute, name: &str) -> bool {
    if !attr.path().is_ident(name) {
        return false;
    }
    if !matches!(attr.meta, syn::Meta::Path(_)) {
        errors.spanned(&attr.meta, format_args!("`#[{name}]` takes no arguments"));
    }
    true
}

/// The error for an attribute put on an item kind it does not support.
pub(crate) fn wrong_item(item: &syn::Item, attr: &str, expected: &str) -> syn::Error {
    let (span, found) = match item {
        syn::Item::Enum(e) => (e.enum_token.span, "an enum"),
        syn::Item::Union(u) => (u.union_token.span, "a union"),
        syn::Item::Fn(f) => (f.sig.fn_token.span, "a function"),
        syn::Item::Trait(t) => (t.trait_token.span, "a trait"),
        syn::Item::Impl(i) => (i.impl_token.span, "an impl block"),
        syn::Item::Struct(s) => (s.struct_token.span, "a struct"),
        other => (other.span(), "this item"),
    };
    syn::Error::new(
        span,
        format_args!("`#[{attr}]` goes on {expected}, not on {found}"),
    )
}

/// The error output of an attribute macro: the item itself (without the macro's helper
/// attributes) so that one mistake does not cascade, plus the errors.
pub(crate) fn fallback(item: TokenStream, error: &syn::Error, helpers: &[&str]) -> TokenStream {
    let mut out = match syn::parse2::<syn::Item>(item.clone()) {
        Ok(mut parsed) => {
            strip_helpers(&mut parsed, helpers);
            parsed.into_token_stream()
        }
        Err(_) => item,
    };
    out.extend(error.to_compile_error());
    out
}

fn strip_helpers(item: &mut syn::Item, helpers: &[&str]) {
    let keep = |attr: &syn::Attribute| !helpers.iter().any(|h| attr.path().is_ident(h));
    match item {
        syn::Item::Struct(s) => {
            for field in &mut s.fields {
                field.attrs.retain(keep);
            }
        }
        syn::Item::Impl(i) => {
            for item in &mut i.items {
                if let syn::ImplItem::Fn(f) = item {
                    f.attrs.retain(keep);
                }
            }
        }
        _ => {}
    }
}

/// Tokens as a user would write them: `Vec<OrderPlaced>`, `&OrderPlaced`.
pub(crate) fn display(tokens: &impl ToTokens) -> String {
    let text = tokens.to_token_stream().to_string();
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            let prev = out.chars().last();
            let next = chars.peek().copied();
            let tight = matches!(prev, Some('&' | '<' | ':' | '(' | '['))
                || matches!(next, Some('<' | '>' | ':' | ',' | ')' | ']'));
            if tight {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The last segment of a type's path: how the macros name an event or command type.
pub(crate) fn last_ident(path: &syn::TypePath) -> Option<&syn::Ident> {
    path.path.segments.last().map(|s| &s.ident)
}
