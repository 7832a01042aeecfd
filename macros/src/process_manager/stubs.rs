//! The stub `#[process_manager]` emits on error: the `ProcessManager` impl, with the state and
//! command types it could read, so that registering the manager reports nothing more.

use proc_macro2::TokenStream;
use quote::quote;

use crate::common::key;
use crate::{handler, stubs};

/// The routing attributes, whose methods take `&mut State` first.
const ROUTES: &[&str] = &[key::START, key::ON, key::STOP];

/// The stub for the impl block `#[process_manager(args)]` failed on.
pub(crate) fn stubs(args: &TokenStream, item: &TokenStream) -> TokenStream {
    let Some(item) = stubs::impl_block(item) else {
        return TokenStream::new();
    };
    let mut state: Option<syn::Type> = None;
    let mut command: Option<syn::Type> = None;
    stubs::args(args, |meta| {
        stubs::value(meta, key::STATE, &mut state) || stubs::value(meta, key::COMMAND, &mut command)
    });
    let routed = || ROUTES.iter().flat_map(|r| stubs::marked(&item, r));
    let state = state
        .or_else(|| routed().find_map(state_of))
        .map_or_else(|| quote!(()), |t| quote!(#t));
    let command = command
        .or_else(|| routed().find_map(command_of))
        .map_or_else(|| quote!(()), |t| quote!(#t));
    let self_ty = &item.self_ty;
    let body = stubs::body();
    quote! {
        #[automatically_derived]
        impl ::factum::ProcessManager for #self_ty {
            type State = #state;
            type Command = #command;

            fn name(&self) -> &str {
                #body
            }

            fn event_types(&self) -> ::factum::__private::Vec<::factum::__private::String> {
                #body
            }

            fn route(
                &self,
                _: &::factum::RecordedEvent,
            ) -> ::core::result::Result<::factum::__private::Route, ::factum::BoxError> {
                #body
            }

            fn handle(
                &self,
                _: &mut Self::State,
                _: &::factum::RecordedEvent,
            ) -> ::core::result::Result<::factum::Effects<Self::Command>, ::factum::BoxError> {
                #body
            }
        }
    }
}

/// `State` of a routed handler's first argument, `&mut State`.
fn state_of(f: &syn::ImplItemFn) -> Option<syn::Type> {
    match &*handler::typed_args(&f.sig).first()?.ty {
        syn::Type::Reference(r) if r.mutability.is_some() => Some((*r.elem).clone()),
        _ => None,
    }
}

/// The command type of a routed handler's return: `C` of `Effects<C>`, `Vec<C>`, `Option<C>`
/// or `C`, optionally in `Result<_, E>`.
fn command_of(f: &syn::ImplItemFn) -> Option<syn::Type> {
    let ty = handler::output(&f.sig)?;
    let ok = handler::result_ok(ty).unwrap_or(ty);
    if handler::is_unit(ok) {
        return None;
    }
    ["Effects", "Vec", "Option"]
        .iter()
        .find_map(|wrapper| handler::single_generic(ok, wrapper))
        .or_else(|| handler::type_path(ok).map(|_| ok))
        .cloned()
}
