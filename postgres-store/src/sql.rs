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
    /// With a `__PARTITION__` placeholder: see [`partition_read`].
    pub(crate) read_all_partition: String,
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
            read_all_partition: r(include_str!("../sql/read_all_partition.sql")),
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

/// The partition of an event among `count` partitions, as SQL: its `stream_hash` (FNV-1a
/// 64 of the stream id, stored as a signed bigint) modulo `count`, taken as the unsigned
/// value `factum::coordination::partition_of` takes. The counts are literals, so that a
/// read of partition p of `count` matches the expression index of `count`.
pub(crate) fn partition_expression(count: u32) -> String {
    let n = u128::from(count.max(1));
    // A negative stored hash h stands for h + 2^64.
    let wrapped = n + (1u128 << 64) % n;
    format!("((stream_hash % {n} + CASE WHEN stream_hash < 0 THEN {wrapped} ELSE {n} END) % {n})")
}

/// The test of partition `index` of `count`, with literals (the predicate of its index).
pub(crate) fn partition_predicate(index: u32, count: u32) -> String {
    format!("{} = {index}", partition_expression(count))
}

/// The read of partition `index` of `count` (`read_all_partition.sql`, rendered).
pub(crate) fn partition_read(statements: &Statements, index: u32, count: u32) -> String {
    statements
        .read_all_partition
        .replace("__PARTITION__", &partition_predicate(index, count))
}

/// The name of the index of partition `index` of `count`.
pub(crate) fn partition_index_name(index: u32, count: u32) -> String {
    format!("events_partition_{count}_{index}_idx")
}

#[cfg(test)]
mod tests {
    use super::partition_expression;

    #[test]
    fn the_partition_expression_takes_the_hash_as_unsigned() {
        // 2^64 = 1 (mod 3): a negative stored hash h is h + 2^64, one more modulo 3.
        assert_eq!(
            partition_expression(3),
            "((stream_hash % 3 + CASE WHEN stream_hash < 0 THEN 4 ELSE 3 END) % 3)"
        );
        // 2^64 = 0 (mod 4).
        assert_eq!(
            partition_expression(4),
            "((stream_hash % 4 + CASE WHEN stream_hash < 0 THEN 4 ELSE 4 END) % 4)"
        );
    }
}
