//! Replays the committed seed corpus of every fuzz target (`fuzz/corpus/<target>/`) through
//! the target's body in `factum_tests::fuzzing`, so that CI runs the fuzzed code on the
//! inputs that matter without a fuzzer. Bounded: a corpus has a handful of small files.

use std::path::{Path, PathBuf};

use factum_tests::fuzzing::{self, Outcome, parcel::ParcelEvent};

/// Largest corpus file replayed; larger ones are a mistake in the corpus.
const MAX_FILE: u64 = 64 * 1024;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let size = std::fs::metadata(&path).expect("corpus file").len();
            assert!(size <= MAX_FILE, "{} has {size} bytes", path.display());
            let data = std::fs::read(&path).expect("corpus file");
            (path, data)
        })
        .collect()
}

/// Runs every file of `target`'s corpus through `body`; each file's outcome is what its
/// name says (`ok-*` accepted, `err-*` refused with a typed error, `skip-*` not in the
/// target's input format), so the corpus keeps covering both sides.
fn replay(target: &str, body: fn(&[u8]) -> Outcome) {
    let files = corpus(target);
    assert!(files.len() >= 4, "{target}: only {} files", files.len());
    let mut seen = Vec::new();
    for (path, data) in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let expected = match name.split('-').next() {
            Some("ok") => Outcome::Accepted,
            Some("err") => Outcome::Refused,
            Some("skip") => Outcome::Skipped,
            _ => panic!("{target}/{name}: a corpus file is named ok-*, err-* or skip-*"),
        };
        assert_eq!(body(data), expected, "{target}/{name}");
        seen.push(expected);
    }
    for outcome in [Outcome::Accepted, Outcome::Refused] {
        assert!(seen.contains(&outcome), "{target}: no input is {outcome:?}");
    }
}

#[test]
fn decode_payload_corpus() {
    replay("decode_payload", fuzzing::decode_payload::<ParcelEvent>);
}

#[test]
fn decode_metadata_corpus() {
    replay("decode_metadata", fuzzing::decode_metadata);
}

#[test]
fn upcast_corpus() {
    replay("upcast", fuzzing::upcast::<ParcelEvent>);
}

#[test]
fn stream_id_corpus() {
    replay("stream_id", fuzzing::parse_stream_id);
}
