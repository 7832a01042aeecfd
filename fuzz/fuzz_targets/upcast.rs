#![no_main]
//! Fuzz target `upcast`: its body is `factum_tests::fuzzing::upcast`, which the
//! corpus-replay test `tests/tests/fuzz_corpus.rs` also runs.

use factum_tests::fuzzing::{self, parcel::ParcelEvent};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = fuzzing::upcast::<ParcelEvent>(data);
});
