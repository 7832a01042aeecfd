//! `#[process_manager]`: on the `impl` block of a process manager, whose methods route events
//! to instances by a correlation key and decide commands; generates the `ProcessManager` impl
//! (name, subscribed event types, routing, decode and dispatch, compensation and timeouts).

mod check;
mod expand;
mod parse;
mod signature;
mod stubs;
#[cfg(test)]
mod tests;

use proc_macro2::TokenStream;

pub(crate) use stubs::stubs;

/// The attribute's name, for messages.
const ATTR: &str = "process_manager";

/// Expands `#[process_manager(args)]` on an `impl` block.
pub(crate) fn expand_process_manager(
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    let input = parse::parse(args, item)?;
    let checked = check::check(input)?;
    Ok(expand::expand(&checked))
}
