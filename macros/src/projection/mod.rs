//! `#[projection]`: on the `impl` block of a read model, whose async methods each handle one
//! event type; generates the `Projection` impl (name, subscribed event types, decode and
//! dispatch, unknown versions, reset).

mod check;
mod expand;
mod parse;
mod stubs;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

pub(crate) use stubs::stubs;

/// The attribute's name, for messages.
const ATTR: &str = "projection";

/// Expands `#[projection(args)]` on an `impl` block.
pub(crate) fn expand_projection(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let input = parse::parse(args, item)?;
    check::check(&input)?;
    Ok(expand::expand(&input))
}
