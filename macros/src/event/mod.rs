//! `#[event]`: an event type with a stored name, a schema version and its upcast chain.

mod check;
mod expand;
mod parse;
#[cfg(test)]
mod tests;

use proc_macro2::{Span, TokenStream};

use crate::common::Errors;

/// The attribute's name, for messages.
const ATTR: &str = "event";

/// Expands `#[event(args)]` on `item`.
pub(crate) fn expand_event(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let input = parse::parse(&mut errors, args, item)?;
    if let Some(input) = &input {
        check::check(&mut errors, input);
    }
    errors.finish()?;
    match input {
        Some(input) => Ok(expand::expand(&input)),
        None => Err(syn::Error::new(Span::call_site(), "expected a struct")),
    }
}
