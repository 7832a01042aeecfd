#![no_main]
//! Fuzz target `decode_metadata`: its body is `factum_tests::fuzzing::decode_metadata`, which the
//! corpus-replay test `tests/tests/fuzz_corpus.rs` also runs.

use factum_tests::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::decode_metadata(data);
});
