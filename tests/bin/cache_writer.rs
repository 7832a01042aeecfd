//! One writer process of the multi-process cache test (`tests/tests/multi_process.rs`): runs
//! `TASKS` tasks that each execute `COMMANDS` commands on ledgers chosen among `STREAMS`,
//! through one repository with its aggregate cache, against a PostgreSQL schema shared with
//! other such processes.
//!
//! Usage: `cache_writer URL SCHEMA WRITER TASKS COMMANDS STREAMS`. It connects, prints
//! `ready`, waits for a line on stdin, then prints one line per executed command:
//! `ledger-ID VERSION BY`, where `BY` is unique to the command. Exits 1 on any error.

use std::io::BufRead as _;
use std::process::ExitCode;

use factum::{Metadata, Repository};
use factum_postgres::{PgConfig, PgStore};
use factum_tests::ledger::{Ledger, RecordV1};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("cache_writer: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, schema, writer, tasks, commands, streams] = args.as_slice() else {
        return Err("usage: cache_writer URL SCHEMA WRITER TASKS COMMANDS STREAMS".into());
    };
    let (writer, tasks, commands, streams): (u64, u64, u64, u64) = (
        writer.parse()?,
        tasks.parse()?,
        commands.parse()?,
        streams.parse()?,
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = PgStore::connect_with(url, PgConfig::default().schema(schema)?).await?;
        let repo = Repository::<Ledger, _>::new(store).with_conflict_retries(10_000);
        println!("ready");
        std::io::stdin().lock().lines().next().transpose()?;
        let mut handles = Vec::new();
        for task in 0..tasks {
            let repo = repo.clone();
            handles.push(tokio::spawn(async move {
                let mut lines = Vec::new();
                for i in 0..commands {
                    let by = writer * 1_000_000 + task * 10_000 + i + 1;
                    // Tasks walk the streams at different strides, so that they collide.
                    let ledger = format!("l-{}", (i * (task + 1) + writer) % streams);
                    let done = repo
                        .execute(RecordV1 { ledger, by }, Metadata::new())
                        .await?;
                    lines.push(format!("{} {} {by}", done.stream_id, done.version));
                }
                Ok::<_, factum::Error<std::convert::Infallible>>(lines)
            }));
        }
        for handle in handles {
            for line in handle.await?? {
                println!("{line}");
            }
        }
        Ok(())
    })
}
