//! `#[command]`: a versioned command type (`PlaceOrderV1`: name `PlaceOrder`, version 1).

mod check;
mod expand;
mod parse;
mod set;
#[cfg(test)]
mod tests;

use proc_macro2::{Span, TokenStream};

use crate::common::Errors;

/// The attribute's name, for messages.
const ATTR: &str = "command";

/// Expands `#[command(args)]` on `item`.
pub(crate) fn expand_command(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    if let Ok(syn::Item::Enum(item)) = syn::parse2::<syn::Item>(item.clone()) {
        let out = set::expand(&mut errors, args, item);
        errors.finish()?;
        return Ok(out);
    }
    let mut input = parse::parse(&mut errors, args, item)?;
    if let Some(input) = &mut input {
        check::check(&mut errors, input);
    }
    errors.finish()?;
    match input {
        Some(input) => Ok(expand::expand(&input)),
        None => Err(syn::Error::new(Span::call_site(), "expected a struct")),
    }
}
