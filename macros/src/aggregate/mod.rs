//! `#[aggregate]`: on the state struct (category, snapshots, state version) and on its `impl`
//! block (command handlers and apply methods), which generates the event and command enums
//! and the `Aggregate` impl.

mod check;
mod expand;
mod parse;
mod stubs;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

pub(crate) use stubs::stubs;

/// The attribute's name, for messages.
const ATTR: &str = "aggregate";

/// Expands `#[aggregate(args)]` on a struct or an `impl` block.
pub(crate) fn expand_aggregate(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    match parse::parse(args, item)? {
        parse::Input::Struct(input) => Ok(expand::expand_struct(&input)),
        parse::Input::Impl(input) => {
            let checked = check::check(*input)?;
            Ok(expand::expand_impl(&checked))
        }
    }
}
