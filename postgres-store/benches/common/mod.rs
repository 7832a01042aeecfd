//! What the benchmark binaries share: SQL rendering, the server description, medians.

use factum_postgres::PgStore;

/// Fills the schema placeholder of a benchmark `.sql` file.
pub(crate) fn sql(template: &str, store: &PgStore) -> String {
    template.replace("__SCHEMA__", &store.config().schema.quoted())
}

/// The median of `values` (0 when empty).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// Prints the server version, where it runs, and the settings that matter for the figures.
pub(crate) async fn describe_server(store: &PgStore) {
    let client = store.pool().get().await.expect("a connection");
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .expect("the server version")
        .get(0);
    println!(
        "PostgreSQL {version} at {}",
        if std::env::var_os("DATABASE_URL").is_some() {
            "DATABASE_URL"
        } else {
            "a throwaway cluster"
        }
    );
    for row in client
        .query(include_str!("../sql/settings.sql"), &[])
        .await
        .expect("the server settings")
    {
        let (name, setting): (String, String) = (row.get(0), row.get(1));
        println!("  {name} = {setting}");
    }
}
