//! The store's SQL, from the `.sql` files, with the schema name filled in.

use crate::config::SchemaName;

/// Advisory lock class of migrations (`FACT`).
pub(crate) const MIGRATE_LOCK_CLASS: i32 = 0x4641_4354;

/// Fills the placeholders of a `.sql` file: `__READ_BOUND__` with the bound of global
/// reads (`read_bound.sql`), `__SCHEMA__` with the schema.
pub(crate) fn render(template: &str, schema: &SchemaName) -> String {
    template
        .replace("__READ_BOUND__", include_str!("../sql/read_bound.sql"))
        .replace("__SCHEMA__", &schema.quoted())
}

/// Every statement the store runs, rendered once per store.
#[derive(Debug)]
pub(crate) struct Statements {
    pub(crate) append: String,
    pub(crate) append_one: String,
    pub(crate) append_claimed: String,
    pub(crate) append_one_claimed: String,
    pub(crate) events_by_ids: String,
    pub(crate) event_by_id: String,
    pub(crate) read_stream: String,
    pub(crate) replay_stream: String,
    pub(crate) replay_stream_until: String,
    pub(crate) load_aggregate: String,
    pub(crate) read_all: String,
    pub(crate) read_all_categories: String,
    pub(crate) read_all_types: String,
    pub(crate) read_all_categories_types: String,
    pub(crate) head_position: String,
    pub(crate) stream_version: String,
    pub(crate) save_snapshot: String,
    pub(crate) load_snapshot: String,
    pub(crate) notify: String,
    pub(crate) migrations_table: String,
    pub(crate) migrations_applied: String,
    pub(crate) migration_record: String,
    pub(crate) record_command: String,
    pub(crate) command_record: String,
    pub(crate) save_snapshot_tenant: String,
}

impl Statements {
    pub(crate) fn new(schema: &SchemaName) -> Self {
        let r = |t: &str| render(t, schema);
        Self {
            append: r(include_str!("../sql/append.sql")),
            append_one: r(include_str!("../sql/append_one.sql")),
            append_claimed: r(include_str!("../sql/append_claimed.sql")),
            append_one_claimed: r(include_str!("../sql/append_one_claimed.sql")),
            events_by_ids: r(include_str!("../sql/events_by_ids.sql")),
            event_by_id: r(include_str!("../sql/event_by_id.sql")),
            read_stream: r(include_str!("../sql/read_stream.sql")),
            replay_stream: r(include_str!("../sql/replay_stream.sql")),
            replay_stream_until: r(include_str!("../sql/replay_stream_until.sql")),
            load_aggregate: r(include_str!("../sql/load_aggregate.sql")),
            read_all: r(include_str!("../sql/read_all_plain.sql")),
            read_all_categories: r(include_str!("../sql/read_all_categories.sql")),
            read_all_types: r(include_str!("../sql/read_all_types.sql")),
            read_all_categories_types: r(include_str!("../sql/read_all_categories_types.sql")),
            head_position: r(include_str!("../sql/head_position.sql")),
            stream_version: r(include_str!("../sql/stream_version.sql")),
            save_snapshot: r(include_str!("../sql/save_snapshot.sql")),
            load_snapshot: r(include_str!("../sql/load_snapshot.sql")),
            notify: r(include_str!("../sql/notify.sql")),
            migrations_table: r(include_str!("../sql/migrations_table.sql")),
            migrations_applied: r(include_str!("../sql/migrations_applied.sql")),
            migration_record: r(include_str!("../sql/migration_record.sql")),
            record_command: r(include_str!("../sql/record_command.sql")),
            command_record: r(include_str!("../sql/command_record.sql")),
            save_snapshot_tenant: r(include_str!("../sql/save_snapshot_tenant.sql")),
        }
    }
}
