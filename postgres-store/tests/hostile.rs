//! Hostile values against PostgreSQL specifically: what the columns hold, byte for byte, and
//! the NUL character, which `jsonb` refuses, refused by the store before the database sees it.

mod common;

use factum::store::{EventPart, NewEvent, Payload};
use factum::testing::cases::HOSTILE_TEXTS;
use factum::{EventStore, ExpectedVersion, Metadata, StoreError, StreamId};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use common::{raw_client, schema, store};

/// `jsonb` itself refuses `\u0000`; the store refuses it with a typed error naming the event
/// and where, and the table holds no row of the batch.
#[tokio::test]
async fn nul_is_refused_before_the_database_sees_it() {
    let client = raw_client().await;
    let refused = client
        .query_one("SELECT $1::text::jsonb", &[&r#"{"a": "x\u0000"}"#])
        .await
        .expect_err("jsonb refuses \\u0000");
    assert_eq!(refused.code(), Some(&SqlState::UNTRANSLATABLE_CHARACTER));

    let store = store().await;
    let s = StreamId::new("order", "o'1").expect("stream");
    let good = NewEvent {
        event_id: Uuid::now_v7(),
        event_type: "Placed".into(),
        schema_version: 1,
        payload: Payload::encode(&serde_json::json!({"a": 1})).expect("json"),
        metadata: Metadata::new(),
    };
    let mut bad = good.clone().with_id(Uuid::now_v7());
    bad.payload = Payload::from_json(r#"{"a": {"b": ["x\u0000"]}}"#.to_owned()).expect("json");
    for batch in [vec![bad.clone()], vec![good.clone(), bad.clone()]] {
        match store.append(&s, ExpectedVersion::Any, &batch).await {
            Err(StoreError::NulCharacter {
                stream,
                event_id,
                event_type,
                part,
                path,
            }) => {
                assert_eq!(
                    (stream, event_id, event_type.as_str(), part, path.as_str()),
                    (
                        s.clone(),
                        bad.event_id,
                        "Placed",
                        EventPart::Payload,
                        "$.a.b[0]"
                    )
                );
            }
            other => panic!("expected NulCharacter, got {other:?}"),
        }
    }
    let rows: i64 = client
        .query_one(
            &format!("SELECT count(*) FROM {}.events", schema(&store)),
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(rows, 0);
}

/// Hostile stream ids (one holding `-` after the category), type names and metadata are
/// stored in the columns exactly, and the generated `category` column is the stream id's
/// category whatever follows it.
#[tokio::test]
async fn hostile_values_are_stored_exactly() {
    let store = store().await;
    let client = raw_client().await;
    let mut ids: Vec<String> = HOSTILE_TEXTS.iter().map(|t| (*t).to_owned()).collect();
    ids.push("a-b--c".to_owned());
    ids.push(format!("{}abc", "😀".repeat(61)));
    for (i, id) in ids.iter().enumerate() {
        let s = StreamId::new("hostile", id).expect("stream");
        let text = HOSTILE_TEXTS[i % HOSTILE_TEXTS.len()];
        let event = NewEvent {
            event_id: Uuid::now_v7(),
            event_type: text.to_owned(),
            schema_version: 1,
            payload: Payload::encode(&serde_json::json!({ text: text })).expect("json"),
            metadata: Metadata::new().actor(text).with(text, text),
        };
        store
            .append(&s, ExpectedVersion::NoStream, std::slice::from_ref(&event))
            .await
            .expect("append");
        let row = client
            .query_one(
                &format!(
                    "SELECT stream_id, category, event_type, payload ->> $2, metadata ->> 'actor',
                            metadata -> 'extra' ->> $2, octet_length(stream_id)
                     FROM {}.events WHERE event_id = $1",
                    schema(&store)
                ),
                &[&event.event_id, &text],
            )
            .await
            .expect("row");
        assert_eq!(row.get::<_, String>(0), s.as_str());
        assert_eq!(row.get::<_, String>(1), "hostile");
        assert_eq!(row.get::<_, String>(2), text);
        assert_eq!(row.get::<_, String>(3), text);
        assert_eq!(row.get::<_, String>(4), text);
        assert_eq!(row.get::<_, String>(5), text);
        assert_eq!(
            row.get::<_, i32>(6),
            i32::try_from(s.as_str().len()).expect("len")
        );
    }
}
