//! Several processes, each with its own repository and aggregate cache, executing commands
//! on the same PostgreSQL streams: the store's version check is the truth, so every command
//! is decided on the stream's current state (each event records the total it was decided
//! on), none is lost or applied twice, and every stream's versions are gapless.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};

use factum::store::StreamRead;
use factum::{EventStore as _, Repository, StreamId};
use factum_postgres::testing::TestDatabase;
use factum_postgres::{PgConfig, PgStore};
use factum_tests::ledger::{Ledger, Recorded};

const WRITERS: u64 = 3;
const TASKS: u64 = 3;
const COMMANDS: u64 = 150;
const STREAMS: u64 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_with_their_own_caches_write_the_same_streams() {
    let url = TestDatabase::get()
        .await
        .expect("a PostgreSQL test database");
    let schema = format!("test_{}", uuid::Uuid::new_v4().simple());
    let config = PgConfig::default().schema(&schema).expect("schema name");
    let store = PgStore::connect_with(&url, config).await.expect("connect");
    store.migrate().await.expect("migrate");

    let outputs = tokio::task::spawn_blocking(move || run_writers(&url, &schema))
        .await
        .expect("writers");

    // What each process says it did: stream -> version -> (writer, by).
    let mut reported: HashMap<String, BTreeMap<u64, (u64, u64)>> = HashMap::new();
    for (writer, output) in outputs.iter().enumerate() {
        for line in output.lines() {
            let mut fields = line.split(' ');
            let (Some(stream), Some(version), Some(by)) =
                (fields.next(), fields.next(), fields.next())
            else {
                panic!("malformed line from writer {writer}: {line:?}");
            };
            let version: u64 = version.parse().expect("version");
            let by: u64 = by.parse().expect("by");
            let earlier = reported
                .entry(stream.to_owned())
                .or_default()
                .insert(version, (writer as u64, by));
            assert!(
                earlier.is_none(),
                "{stream} version {version} acknowledged twice: {earlier:?} and {by}"
            );
        }
    }
    let acknowledged: usize = reported.values().map(BTreeMap::len).sum();
    assert_eq!(acknowledged as u64, WRITERS * TASKS * COMMANDS);

    let mut interleaved = 0;
    for (stream, versions) in &reported {
        let stream_id: StreamId = stream.parse().expect("stream id");
        let stored = store
            .read_stream(&stream_id, &StreamRead::all())
            .await
            .expect("read");
        assert_eq!(
            versions.keys().copied().collect::<Vec<_>>(),
            (1..=stored.len() as u64).collect::<Vec<_>>(),
            "{stream}: every stored version acknowledged once, none missing"
        );
        let mut total = 0;
        for (event, (version, (_, by))) in stored.iter().zip(versions) {
            let recorded = event.payload.decode::<Recorded>().expect("decode");
            assert_eq!(
                (event.stream_version, recorded.by),
                (*version, *by),
                "{stream}: the event at each version is the command acknowledged with it"
            );
            assert_eq!(
                recorded.total_before, total,
                "{stream} version {version}: decided on a stale state"
            );
            total += recorded.by;
        }
        let id = stream.strip_prefix("ledger-").expect("a ledger stream");
        let loaded = Repository::<Ledger, _>::new(store.clone())
            .load(id)
            .await
            .expect("load");
        let sum: u64 = versions.values().map(|(_, by)| by).sum();
        assert_eq!(
            (loaded.state.total, loaded.version),
            (sum, versions.len() as u64)
        );
        // A writer that wrote, was overtaken by another, and wrote again decided on a stale
        // cache entry at least once in between, or caught up before deciding.
        let writers: Vec<u64> = versions.values().map(|(writer, _)| *writer).collect();
        interleaved += writers
            .windows(3)
            .filter(|w| w[0] == w[2] && w[0] != w[1])
            .count();
    }
    assert!(
        interleaved > 0,
        "the processes never wrote one stream in turns; the test did not exercise stale caches"
    );
}

/// Starts the writers, lets them go together once all are connected, and returns what each
/// printed.
fn run_writers(url: &str, schema: &str) -> Vec<String> {
    let mut children: Vec<_> = (0..WRITERS)
        .map(|writer| {
            Command::new(env!("CARGO_BIN_EXE_cache_writer"))
                .args([url, schema])
                .args([writer, TASKS, COMMANDS, STREAMS].map(|n| n.to_string()))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start a writer")
        })
        .collect();
    let mut readers: Vec<_> = children
        .iter_mut()
        .map(|child| BufReader::new(child.stdout.take().expect("stdout")))
        .collect();
    for (writer, reader) in readers.iter_mut().enumerate() {
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        assert_eq!(line.trim(), "ready", "writer {writer} did not connect");
    }
    for child in &mut children {
        writeln!(child.stdin.as_mut().expect("stdin"), "go").expect("start");
    }
    children
        .into_iter()
        .zip(readers)
        .enumerate()
        .map(|(writer, (child, mut reader))| {
            let mut output = String::new();
            std::io::Read::read_to_string(&mut reader, &mut output).expect("read");
            let done = child.wait_with_output().expect("wait");
            assert!(
                done.status.success(),
                "writer {writer} failed: {}",
                String::from_utf8_lossy(&done.stderr)
            );
            output
        })
        .collect()
}
