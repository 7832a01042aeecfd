#![no_main]
//! Fuzz target `stream_id`: its body is `factum_tests::fuzzing::parse_stream_id`, which the
//! corpus-replay test `tests/tests/fuzz_corpus.rs` also runs.

use factum_tests::fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::parse_stream_id(data);
});
