//! docs/architecture.md matches the code where a machine can tell: its key table lists exactly
//! the keys the broker lays out, its field table exactly the names of `schema.rs`, and every
//! script it names exists in `scripts.rs` (and every script is named there).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use eventflow_broker::{Keys, schema};

fn read(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// `<p>:{<s>}...` with the prefix and names the doc uses as placeholders.
fn doc_form(key: &str) -> String {
    key.replacen("p", "<p>", 1)
        .replace("{s}", "{<s>}")
        .replace(":n", ":<n>")
        .replace(":id", ":<event id>")
        .replace(":1:2", ":<width ms>:<index>")
}

/// The backticked first cells of the table rows of `doc` whose first cell starts with `start`.
fn first_cells<'a>(doc: &'a str, start: &str) -> Vec<&'a str> {
    doc.lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter(|l| l.starts_with(start))
        .filter_map(|l| l.split_once('`').map(|(cell, _)| cell))
        .collect()
}

#[test]
fn the_key_table_lists_every_key_and_only_those() {
    let doc = read("docs/architecture.md");
    let k = Keys::new("p");
    let keys = [
        k.streams(),
        k.layout(),
        k.stream("s"),
        k.meta("s"),
        k.subs("s"),
        k.sub("s", "n"),
        k.dlq("s", "n"),
        k.redrive("s", "n"),
        k.delay("s", "n"),
        k.redrive_delay("s", "n"),
        k.errors("s", "n"),
        k.breaker("s", "n"),
        k.dedup("s", "id"),
        k.dedup_ids("s", 1, 2),
        k.deleting("s"),
        k.heads("s", "n"),
        k.waiting("s", "n"),
        k.blocked("s", "n"),
    ];
    let built: BTreeSet<String> = keys.iter().map(|key| doc_form(key)).collect();
    let documented: BTreeSet<String> = first_cells(&doc, "<p>:").into_iter().map(String::from).collect();
    assert_eq!(built, documented, "docs/architecture.md's key table against the keys Keys builds");
    for (_, segment) in schema::key::ALL {
        assert!(
            built.iter().any(|form| form.split(':').any(|part| part == *segment)),
            "key segment {segment} of schema.rs is in no key Keys builds"
        );
    }
}

#[test]
fn the_field_table_lists_every_schema_name_and_only_those() {
    let doc = read("docs/architecture.md");
    let groups: BTreeSet<&str> = schema::GROUPS.iter().map(|(group, _)| *group).collect();
    let documented: BTreeSet<(String, String)> = doc
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let (group, name) = (*cells.get(1)?, *cells.get(2)?);
            let name = name.strip_prefix('`')?.strip_suffix('`')?;
            groups.contains(group).then(|| (group.to_string(), name.to_string()))
        })
        .collect();
    let schema: BTreeSet<(String, String)> = schema::GROUPS
        .iter()
        .flat_map(|(group, names)| names.iter().map(move |(_, value)| (group.to_string(), value.to_string())))
        .collect();
    let missing: Vec<_> = schema.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&schema).collect();
    assert!(missing.is_empty(), "schema.rs names missing from docs/architecture.md's field table: {missing:?}");
    assert!(extra.is_empty(), "docs/architecture.md's field table names what schema.rs does not: {extra:?}");
}

#[test]
fn every_script_is_documented_and_every_documented_script_exists() {
    let doc = read("docs/architecture.md");
    let code = read("libs/broker/src/scripts.rs");
    let scripts: BTreeSet<String> = code
        .lines()
        .filter_map(|l| l.strip_prefix("pub static "))
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.to_string()))
        .collect();
    assert!(scripts.len() > 10, "{scripts:?}");
    let named: BTreeSet<String> = doc
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|w| w.len() > 2 && w.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(String::from)
        .collect();
    // Redis commands the doc names are not scripts.
    let redis_commands = [
        "HMGET", "HSET", "MGET", "TIME", "UNLINK", "XACK", "XADD", "XCLAIM", "XDEL", "XINFO", "XPENDING", "XTRIM",
        "XREAD",
    ];
    for name in named.iter().filter(|n| !redis_commands.contains(&n.as_str()) && !n.starts_with("EVENTFLOW_")) {
        assert!(scripts.contains(name), "docs/architecture.md names script {name}, which scripts.rs does not have");
    }
    for script in &scripts {
        assert!(named.contains(script), "script {script} is not described in docs/architecture.md");
    }
}
