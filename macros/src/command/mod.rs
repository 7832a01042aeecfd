//! `#[command]`: a versioned command type (`PlaceOrderV1`: name `PlaceOrder`, version 1).

mod check;
mod expand;
mod parse;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

/// The attribute's name, for messages.
const ATTR: &str = "command";

/// Expands `#[command(args)]` on `item`.
pub(crate) fn expand_command(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut input = parse::parse(args, item)?;
    check::check(&mut input)?;
    Ok(expand::expand(&input))
}
