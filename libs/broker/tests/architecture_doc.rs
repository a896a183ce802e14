//! docs/architecture.md matches the code where a machine can tell: every key the broker lays out
//! is in its key table, and every script it names exists in `scripts.rs` (and every script is
//! named there).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use eventflow_broker::Keys;

fn read(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap()
}

/// `<p>:{<s>}...` with the prefix and names the doc uses as placeholders.
fn doc_form(key: &str) -> String {
    key.replacen("p", "<p>", 1).replace("{s}", "{<s>}").replace(":n", ":<n>").replace(":id", ":<event id>")
}

#[test]
fn the_key_table_lists_every_key() {
    let doc = read("docs/architecture.md");
    let k = Keys::new("p");
    let keys = [
        k.streams(),
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
    ];
    for key in keys {
        let form = doc_form(&key);
        let tail = form.rsplit_once("{<s>}").map_or(form.as_str(), |(_, t)| t);
        assert!(
            doc.contains(&format!("`{form}`")) || (!tail.is_empty() && doc.contains(&format!("`...{tail}`"))),
            "docs/architecture.md does not list {form}"
        );
    }
    assert!(doc.contains(":deleting"), "the delete marker is documented");
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
    let redis_commands = ["MGET", "XACK", "XADD", "XCLAIM", "XDEL", "XINFO", "XPENDING", "XTRIM", "XREAD"];
    for name in named.iter().filter(|n| !redis_commands.contains(&n.as_str()) && !n.starts_with("EVENTFLOW_")) {
        assert!(scripts.contains(name), "docs/architecture.md names script {name}, which scripts.rs does not have");
    }
    for script in &scripts {
        assert!(named.contains(script), "script {script} is not described in docs/architecture.md");
    }
}
