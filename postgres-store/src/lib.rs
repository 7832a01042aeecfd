//! PostgreSQL event store for `factum`.
