//! Tables for people, JSON for scripts.

use std::io::Write;
use std::time::Duration;

use comfy_table::{Table, presets};
use serde::Serialize;

use crate::CliError;

/// A table with `header`, borders of plain ASCII and no wrapping (the output is the same on
/// a terminal and in a pipe).
pub(crate) fn table<const N: usize>(header: [&str; N]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::ASCII_BORDERS_ONLY_CONDENSED);
    table.set_header(header);
    table
}

pub(crate) fn print_table(out: &mut dyn Write, table: &Table) -> Result<(), CliError> {
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

pub(crate) fn print_json<T: Serialize + ?Sized>(
    out: &mut dyn Write,
    value: &T,
) -> Result<(), CliError> {
    serde_json::to_writer_pretty(&mut *out, value).map_err(std::io::Error::from)?;
    writeln!(out)?;
    Ok(())
}

/// A duration in whole seconds, as `1h 2m 3s`.
pub(crate) fn age(duration: Duration) -> String {
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

/// `age`, or `-`.
pub(crate) fn age_or_dash(duration: Option<Duration>) -> String {
    duration.map_or_else(|| "-".to_owned(), age)
}

/// Seconds with millisecond precision, for JSON.
pub(crate) fn secs(duration: Option<Duration>) -> Option<f64> {
    duration.map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0)
}
