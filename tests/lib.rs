//! Cross-crate tests for factum; the tests live in `tests/`.
