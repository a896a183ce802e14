//! Output: aligned text tables for people, JSON documents (or JSON lines) for scripts, and the
//! small formatting helpers both share. Everything goes through [`print()`] so a closed stdout
//! (`eventflow tail ... | head`) ends the command quietly instead of panicking.

use std::io::{IsTerminal, Write};

use prost_types::{Duration as ProtoDuration, Timestamp};

use crate::{duration, exit::CliError, time};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document per command (JSON lines for `tail`).
    Json,
}

/// Text laid out in aligned columns separated by two spaces.
#[derive(Debug, Default)]
pub struct Table {
    /// The header row, then the data rows.
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(headers: &[&str]) -> Self {
        Self { rows: vec![headers.iter().map(|h| (*h).to_string()).collect()] }
    }

    /// Appends a row (one cell per column).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (cell, width) in row.iter().zip(&widths) {
                line.push_str(&format!("{cell:<width$}  "));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned, for showing one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let key = format!("{key}:");
        out.push_str(format!("{key:<width$} {value}").trim_end());
        out.push('\n');
    }
    out
}

/// Writes `text` to stdout as is.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// Writes one pretty JSON document and a newline to stdout.
pub fn json(value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::Other(e.to_string()))?;
    print(&(text + "\n"))
}

/// Writes one compact JSON line to stdout.
pub fn json_line(value: &serde_json::Value) -> Result<(), CliError> {
    print(&(value.to_string() + "\n"))
}

/// Writes one `eventflow: ...` line to stderr (warnings, progress); failures to write are ignored.
pub fn note(message: &str) {
    let _ = writeln!(std::io::stderr(), "eventflow: {message}");
}

/// Asks for confirmation of a destructive action unless `yes`; only on a terminal, so scripts
/// must pass `--yes` explicitly.
pub fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!("{question}: pass --yes to confirm (stdin is not a terminal)")));
    }
    let _ = write!(std::io::stderr(), "{question}? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    match answer.trim() {
        "y" | "Y" | "yes" => Ok(()),
        _ => Err(CliError::Other("aborted".into())),
    }
}

/// A protobuf duration in the CLI's own form (`10m`), or `-` when unset.
pub fn show_duration(d: Option<&ProtoDuration>) -> String {
    d.and_then(eventflow_proto::convert::duration_from_proto).map_or_else(|| "-".into(), duration::format)
}

/// A protobuf timestamp in RFC 3339 UTC, or `-` when unset.
pub fn show_time(t: Option<&Timestamp>) -> String {
    t.map_or_else(|| "-".into(), time::format_rfc3339)
}

/// A count where 0 means "no limit".
pub fn show_limit(n: i64) -> String {
    if n == 0 { "unlimited".into() } else { n.to_string() }
}

/// A list joined with commas, or `-` when empty.
pub fn show_list(items: &[String]) -> String {
    if items.is_empty() { "-".into() } else { items.join(",") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_lines() {
        let mut table = Table::new(&["NAME", "LENGTH"]);
        table.row(vec!["orders".into(), "12".into()]);
        table.row(vec!["a".into(), "".into()]);
        assert_eq!(table.render(), "NAME    LENGTH\norders  12\na\n");
    }

    #[test]
    fn fields_align_values() {
        let text = fields(&[("name", "orders".into()), ("max_length", "5".into())]);
        assert_eq!(text, "name:       orders\nmax_length: 5\n");
    }
}
