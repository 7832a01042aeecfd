#![no_main]
//! Fuzz target `decode_payload`: its body is `factum_tests::fuzzing::decode_payload`, which the
//! corpus-replay test `tests/tests/fuzz_corpus.rs` also runs.

use factum_tests::fuzzing::{self, parcel::ParcelEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::decode_payload::<ParcelEvent>(data);
});
