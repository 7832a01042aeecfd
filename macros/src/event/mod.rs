//! `#[event]`: an event type with a stored name, a schema version and its upcast chain.

mod check;
mod expand;
mod parse;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

/// The attribute's name, for messages.
const ATTR: &str = "event";

/// Expands `#[event(args)]` on `item`.
pub(crate) fn expand_event(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let input = parse::parse(args, item)?;
    check::check(&input)?;
    Ok(expand::expand(&input))
}
