//! Rules across the `#[command]` arguments: the name and version, from the type name's
//! `V<n>` suffix or the attribute.

use super::ATTR;
use super::parse::Input;
use crate::common::{self, Errors};

/// Splits `PlaceOrderV1` into `("PlaceOrder", "1")`.
pub(crate) fn version_suffix(ident: &str) -> Option<(&str, &str)> {
    let at = ident.rfind('V')?;
    let (base, digits) = (&ident[..at], &ident[at + 1..]);
    (!base.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some((base, digits))
}

pub(super) fn check(errors: &mut Errors, input: &mut Input) {
    common::no_generics(errors, &input.item.generics, ATTR);
    let ident = input.item.ident.to_string();
    let suffix = version_suffix(&ident);
    let suffix_version = match suffix {
        Some((_, digits)) => match digits.parse::<u32>() {
            Ok(v) if v > 0 => Some(v),
            _ => {
                errors.spanned(
                    &input.item.ident,
                    format_args!("the version suffix of `{ident}` must be a number from 1"),
                );
                None
            }
        },
        None => None,
    };
    input.name = match &input.args.name {
        Some(name) if name.value().is_empty() => {
            errors.spanned(name, "a command name cannot be empty");
            String::new()
        }
        Some(name) => name.value(),
        None => suffix.map_or_else(|| ident.clone(), |(base, _)| base.to_owned()),
    };
    input.version = match (&input.args.version, suffix_version) {
        (Some((v, lit)), Some(s)) if *v != s => {
            errors.spanned(
                lit,
                format_args!("`version = {v}` contradicts the `V{s}` suffix of `{ident}`"),
            );
            *v
        }
        (Some((v, _)), _) => *v,
        (None, Some(s)) => s,
        (None, None) => 1,
    };
}

#[cfg(test)]
mod tests {
    use super::version_suffix;

    #[test]
    fn suffixes() {
        assert_eq!(version_suffix("PlaceOrderV1"), Some(("PlaceOrder", "1")));
        assert_eq!(version_suffix("PlaceOrderV12"), Some(("PlaceOrder", "12")));
        assert_eq!(version_suffix("PlaceOrder"), None);
        assert_eq!(version_suffix("V1"), None);
        assert_eq!(version_suffix("MoveV"), None);
        assert_eq!(version_suffix("ShipViaX"), None);
    }
}
