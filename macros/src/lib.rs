//! Attribute macros for [`factum`](https://docs.rs/factum): `#[event]`, `#[command]`,
//! `#[aggregate]`, `#[projection]` and `#[process_manager]`. Use them through the `factum`
//! crate, which re-exports them and documents them with examples.
//!
//! Each entry point only converts token streams; the parsing, checks and code generation are
//! plain functions (`expand_*`) so that they can be unit-tested and snapshotted.

mod aggregate;
mod command;
mod common;
mod event;
mod handler;
mod process_manager;
mod projection;
#[cfg(test)]
mod stable_paths;
mod stubs;

use proc_macro::TokenStream;

#[doc = include_str!("../doc/event.md")]
#[proc_macro_attribute]
pub fn event(args: TokenStream, item: TokenStream) -> TokenStream {
    run(args, item, event::expand_event, &["personal"], no_stubs)
}

#[doc = include_str!("../doc/command.md")]
#[proc_macro_attribute]
pub fn command(args: TokenStream, item: TokenStream) -> TokenStream {
    run(args, item, command::expand_command, &["id"], no_stubs)
}

#[doc = include_str!("../doc/aggregate.md")]
#[proc_macro_attribute]
pub fn aggregate(args: TokenStream, item: TokenStream) -> TokenStream {
    run(
        args,
        item,
        aggregate::expand_aggregate,
        &["handle", "apply"],
        aggregate::stubs,
    )
}

#[doc = include_str!("../doc/projection.md")]
#[proc_macro_attribute]
pub fn projection(args: TokenStream, item: TokenStream) -> TokenStream {
    run(
        args,
        item,
        projection::expand_projection,
        &["reset"],
        projection::stubs,
    )
}

#[doc = include_str!("../doc/process_manager.md")]
#[proc_macro_attribute]
pub fn process_manager(args: TokenStream, item: TokenStream) -> TokenStream {
    run(
        args,
        item,
        process_manager::expand_process_manager,
        &["start", "on", "stop", "on_rejected", "on_timeout"],
        process_manager::stubs,
    )
}

type Expand =
    fn(proc_macro2::TokenStream, proc_macro2::TokenStream) -> syn::Result<proc_macro2::TokenStream>;

/// What a macro emits on error besides the item: the stubs of what it generates, from its
/// arguments and item.
type Stubs = fn(&proc_macro2::TokenStream, &proc_macro2::TokenStream) -> proc_macro2::TokenStream;

fn no_stubs(
    _: &proc_macro2::TokenStream,
    _: &proc_macro2::TokenStream,
) -> proc_macro2::TokenStream {
    proc_macro2::TokenStream::new()
}

fn run(
    args: TokenStream,
    item: TokenStream,
    expand: Expand,
    helpers: &[&str],
    stubs: Stubs,
) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let item = proc_macro2::TokenStream::from(item);
    match expand(args.clone(), item.clone()) {
        Ok(out) => out.into(),
        Err(error) => {
            let mut out = common::fallback(item.clone(), &error, helpers);
            out.extend(stubs(&args, &item));
            out.into()
        }
    }
}

#[cfg(test)]
mod test_support {
    use proc_macro2::TokenStream;

    /// Formats an expansion for a snapshot.
    pub(crate) fn pretty(tokens: TokenStream) -> String {
        let file: syn::File = syn::parse2(tokens).expect("the expansion parses as a file");
        prettyplease::unparse(&file)
    }

    /// The message of an expansion that must fail.
    pub(crate) fn error(result: syn::Result<TokenStream>) -> String {
        match result {
            Ok(tokens) => panic!("expected an error, got {tokens}"),
            Err(e) => e
                .into_iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}
