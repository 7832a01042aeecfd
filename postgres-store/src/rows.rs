//! Turning rows into events without trusting them.

use chrono::{DateTime, Utc};
use factum::store::{CommandOutcome, CommandRecord, Payload, ReplayEvent, Snapshot};
use factum::{Metadata, RecordedEvent, StoreError, StreamId};
use tokio_postgres::Row;
use tokio_postgres::types::{FromSql, Type};
use uuid::Uuid;

/// A `jsonb` or `json` value kept as text, to be validated once into a [`Payload`].
pub(crate) struct RawJson<'a>(pub(crate) &'a str);

impl<'a> FromSql<'a> for RawJson<'a> {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        let text = if *ty == Type::JSONB {
            match raw.split_first() {
                Some((1, rest)) => rest,
                _ => return Err("unsupported jsonb binary format version".into()),
            }
        } else {
            raw
        };
        Ok(RawJson(std::str::from_utf8(text)?))
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSONB || *ty == Type::JSON
    }
}

fn corrupt(location: impl Into<String>, message: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        location: location.into(),
        message: message.to_string(),
    }
}

/// Decodes an event row of the columns `position, event_id, stream_id, stream_version,
/// event_type, schema_version, payload, metadata, recorded_at`.
pub(crate) fn event(row: &Row) -> Result<RecordedEvent, StoreError> {
    decode(row, None)
}

/// Decodes an event row of `stream` without its stream id column: `position, event_id,
/// stream_version, event_type, schema_version, payload, metadata, recorded_at`.
pub(crate) fn stream_event(row: &Row, stream: &StreamId) -> Result<RecordedEvent, StoreError> {
    decode(row, Some(stream))
}

fn decode(row: &Row, known_stream: Option<&StreamId>) -> Result<RecordedEvent, StoreError> {
    // Column indexes after the stream id move down by one when it is not selected.
    let at = |column: usize| {
        if known_stream.is_some() {
            column - 1
        } else {
            column
        }
    };
    // The position first: it names the row in every later error.
    let position: i64 = row
        .try_get(0)
        .map_err(|e| corrupt("an event row without a position", e))?;
    let stream: Result<&str, _> = match known_stream {
        Some(stream) => Ok(stream.as_str()),
        None => row.try_get(2),
    };
    let version: Result<i64, _> = row.try_get(at(3));
    let location = || match (&stream, &version) {
        (Ok(s), Ok(v)) => format!("stream `{s}` version {v} (position {position})"),
        (Ok(s), Err(_)) => format!("stream `{s}` (position {position})"),
        _ => format!("position {position}"),
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| corrupt(location(), format!("{what}: {e}"));
    let position = u64::try_from(position).map_err(|e| fail("position", &e))?;
    let stream_id = match known_stream {
        Some(stream) => stream.clone(),
        None => StreamId::parse(stream.as_ref().map_err(|e| fail("stream id", e))?)
            .map_err(|e| fail("stream id", &e))?,
    };
    let stream_version = u64::try_from(*version.as_ref().map_err(|e| fail("stream version", e))?)
        .map_err(|e| fail("stream version", &e))?;
    if stream_version == 0 {
        return Err(fail("stream version", &"versions start at 1"));
    }
    let event_id: Uuid = row.try_get(1).map_err(|e| fail("event id", &e))?;
    let event_type: String = row.try_get(at(4)).map_err(|e| fail("event type", &e))?;
    let schema_version: i32 = row.try_get(at(5)).map_err(|e| fail("schema version", &e))?;
    let schema_version = u32::try_from(schema_version).map_err(|e| fail("schema version", &e))?;
    let payload: RawJson<'_> = row.try_get(at(6)).map_err(|e| fail("payload", &e))?;
    // `jsonb` holds only well-formed JSON: no second validation.
    let payload = Payload::from_trusted_json(payload.0.to_owned());
    let metadata: RawJson<'_> = row.try_get(at(7)).map_err(|e| fail("metadata", &e))?;
    let metadata: Metadata = if metadata.0 == "{}" {
        Metadata::default()
    } else {
        serde_json::from_str(metadata.0).map_err(|e| fail("metadata", &e))?
    };
    let recorded_at: DateTime<Utc> = row.try_get(at(8)).map_err(|e| fail("recorded at", &e))?;
    Ok(RecordedEvent {
        event_id,
        stream_id,
        stream_version,
        position,
        event_type,
        schema_version,
        payload,
        metadata,
        recorded_at,
    })
}

/// Decodes a replay row of `stream`: `stream_version, position, event_type, schema_version,
/// payload`.
pub(crate) fn replay_event(row: &Row, stream: &StreamId) -> Result<ReplayEvent, StoreError> {
    let version: i64 = row
        .try_get(0)
        .map_err(|e| corrupt(format!("stream `{stream}`"), e))?;
    // The location is only formatted for a row that fails: this runs once per event of a load.
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        corrupt(
            format!("stream `{stream}` version {version}"),
            format!("{what}: {e}"),
        )
    };
    let stream_version = u64::try_from(version).map_err(|e| fail("stream version", &e))?;
    if stream_version == 0 {
        return Err(fail("stream version", &"versions start at 1"));
    }
    let position: i64 = row.try_get(1).map_err(|e| fail("position", &e))?;
    let position = u64::try_from(position).map_err(|e| fail("position", &e))?;
    let event_type: String = row.try_get(2).map_err(|e| fail("event type", &e))?;
    let schema_version: i32 = row.try_get(3).map_err(|e| fail("schema version", &e))?;
    let schema_version = u32::try_from(schema_version).map_err(|e| fail("schema version", &e))?;
    let payload: RawJson<'_> = row.try_get(4).map_err(|e| fail("payload", &e))?;
    Ok(ReplayEvent {
        stream_version,
        position,
        event_type,
        schema_version,
        payload: Payload::from_trusted_json(payload.0.to_owned()),
    })
}

/// A row of `load_aggregate.sql`: the snapshot, or an event after it.
pub(crate) enum AggregateRow {
    /// The snapshot (its row has no position).
    Snapshot(Snapshot),
    /// An event, as [`replay_event`] decodes it.
    Event(ReplayEvent),
}

/// Decodes a row of `load_aggregate.sql` for `stream` and the snapshot schema version asked
/// for: `stream_version, position, event_type, schema_version, payload, taken_at`, where the
/// snapshot's row has no position, its version in `stream_version`, its state in `payload`.
pub(crate) fn aggregate_row(
    row: &Row,
    stream: &StreamId,
    schema_version: u32,
) -> Result<AggregateRow, StoreError> {
    let position: Option<i64> = row
        .try_get(1)
        .map_err(|e| corrupt(format!("stream `{stream}`"), e))?;
    if position.is_some() {
        return replay_event(row, stream).map(AggregateRow::Event);
    }
    let version: i64 = row
        .try_get(0)
        .map_err(|e| corrupt(format!("snapshot of stream `{stream}`"), e))?;
    let location = format!("snapshot of stream `{stream}` at version {version}");
    let fail = |what: &str, e: &dyn std::fmt::Display| corrupt(&location, format!("{what}: {e}"));
    let version = u64::try_from(version).map_err(|e| fail("version", &e))?;
    let state: RawJson<'_> = row.try_get(4).map_err(|e| fail("state", &e))?;
    let taken_at: DateTime<Utc> = row.try_get(5).map_err(|e| fail("taken at", &e))?;
    Ok(AggregateRow::Snapshot(Snapshot {
        stream_id: stream.clone(),
        version,
        schema_version,
        state: Payload::from_trusted_json(state.0.to_owned()),
        taken_at,
    }))
}

/// Decodes a snapshot row of the columns `stream_id, schema_version, version, state,
/// taken_at`.
pub(crate) fn snapshot(row: &Row) -> Result<Snapshot, StoreError> {
    let stream: String = row.try_get(0).map_err(|e| corrupt("a snapshot row", e))?;
    let version: i64 = row
        .try_get(2)
        .map_err(|e| corrupt(format!("snapshot of stream `{stream}`"), e))?;
    let location = format!("snapshot of stream `{stream}` at version {version}");
    let fail = |what: &str, e: &dyn std::fmt::Display| corrupt(&location, format!("{what}: {e}"));
    let stream_id = StreamId::parse(&stream).map_err(|e| fail("stream id", &e))?;
    let version = u64::try_from(version).map_err(|e| fail("version", &e))?;
    let schema_version: i32 = row.try_get(1).map_err(|e| fail("schema version", &e))?;
    let schema_version = u32::try_from(schema_version).map_err(|e| fail("schema version", &e))?;
    let state: RawJson<'_> = row.try_get(3).map_err(|e| fail("state", &e))?;
    let state = Payload::from_trusted_json(state.0.to_owned());
    let taken_at: DateTime<Utc> = row.try_get(4).map_err(|e| fail("taken at", &e))?;
    Ok(Snapshot {
        stream_id,
        version,
        schema_version,
        state,
        taken_at,
    })
}

/// Decodes a command-log row of `command_id`: `stream_id, version, outcome, message`.
pub(crate) fn command_record(row: &Row, command_id: Uuid) -> Result<CommandRecord, StoreError> {
    let location = || format!("command log row of command {command_id}");
    let stream: String = row.try_get(0).map_err(|e| corrupt(location(), e))?;
    let stream_id = StreamId::parse(&stream).map_err(|e| corrupt(location(), e))?;
    let version: i64 = row.try_get(1).map_err(|e| corrupt(location(), e))?;
    let version = u64::try_from(version)
        .map_err(|_| corrupt(location(), format!("negative version {version}")))?;
    let outcome: i16 = row.try_get(2).map_err(|e| corrupt(location(), e))?;
    let message: Option<String> = row.try_get(3).map_err(|e| corrupt(location(), e))?;
    let outcome = match outcome {
        0 => CommandOutcome::Appended,
        1 => CommandOutcome::NoEvents,
        2 => CommandOutcome::Rejected {
            message: message.unwrap_or_default(),
        },
        other => return Err(corrupt(location(), format!("unknown outcome {other}"))),
    };
    Ok(CommandRecord {
        command_id,
        stream_id,
        version,
        outcome,
    })
}
