//! Rules across the handlers of a `#[projection]` impl block.

use std::collections::HashMap;

use super::parse::Input;
use crate::common::{self, Errors};

pub(super) fn check(input: &Input) -> syn::Result<()> {
    let mut errors = Errors::default();
    if input.handlers.is_empty() {
        errors.spanned(
            &input.item.self_ty,
            format_args!(
                "`#[projection]` impl of `{}` has no handler: add an `async fn` taking `&self` and an `&Event`",
                common::display(&input.item.self_ty)
            ),
        );
    }
    let mut handled: HashMap<String, &syn::Ident> = HashMap::new();
    for handler in &input.handlers {
        let name = common::display(&handler.event);
        match handled.get(&name) {
            Some(first) => errors.spanned(
                &handler.event,
                format_args!(
                    "`{name}` has two handlers: `{first}` and `{}`; a projection handles each event type once",
                    handler.method
                ),
            ),
            None => {
                handled.insert(name, &handler.method);
            }
        }
    }
    errors.finish()
}
