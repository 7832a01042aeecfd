//! Attribute macros for `factum`. Use them through the `factum` crate.

use proc_macro::TokenStream;

/// Declares an event type.
#[proc_macro_attribute]
pub fn event(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Declares a versioned command type.
#[proc_macro_attribute]
pub fn command(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}

/// Declares an aggregate.
#[proc_macro_attribute]
pub fn aggregate(_args: TokenStream, item: TokenStream) -> TokenStream {
    item
}
