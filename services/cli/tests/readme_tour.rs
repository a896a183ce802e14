//! The README's five-minute tour, CLI part: every `eventflow ...` line of the tour's shell blocks,
//! read from README.md (so this follows the README as it changes), is run as written by
//! `bash -o pipefail -c` with the built `eventflow` first on PATH, in order, against the real
//! services started in-process over a redis-server the harness starts. Each line must exit 0
//! within [`LINE_DEADLINE`]: a command that waits for events that never come (a `tail --max 10`
//! after publishing one) fails here instead of looking hung to a new user.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{path::Path, process::Stdio, time::Duration};

use eventflow_e2e::Stack;
use tokio::process::Command;

/// Upper bound on one tour line. The tour's `tail` stops at its `--max`; its `--idle-timeout`
/// (5 s) is the fallback, well inside this bound.
const LINE_DEADLINE: Duration = Duration::from_secs(30);

/// The heading of the tour section in README.md.
const TOUR_HEADING: &str = "## A five-minute tour";

/// The shell command lines of the tour section of `readme` that run `eventflow`: lines of its
/// ```` ```sh ```` blocks, with `\`-continued lines joined, leaving out blank lines and comments.
fn tour_commands(readme: &str) -> Vec<String> {
    let start = readme.find(TOUR_HEADING).expect("README.md has a tour section");
    let section = &readme[start + TOUR_HEADING.len()..];
    let section = section.find("\n## ").map_or(section, |end| &section[..end]);
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut pending = String::new();
    for line in section.lines() {
        let fence = line.trim_start();
        if fence.starts_with("```") {
            in_sh = !in_sh && fence == "```sh";
            continue;
        }
        if !in_sh {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => pending.push_str(head),
            None => {
                pending.push_str(line);
                let command = std::mem::take(&mut pending);
                let trimmed = command.trim();
                if !trimmed.is_empty() && !trimmed.starts_with('#') && runs_eventflow(trimmed) {
                    commands.push(trimmed.to_string());
                }
            }
        }
    }
    commands
}

/// Whether a shell line runs `eventflow` (first, or after a pipe).
fn runs_eventflow(line: &str) -> bool {
    line.starts_with("eventflow ") || line.contains("| eventflow ")
}

#[test]
fn tour_lines_are_read_from_sh_blocks_of_the_tour_only() {
    let readme = "\
# x
```sh
eventflow before the tour
```
## A five-minute tour
```python
eventflow = 1
```
```sh
eventflow stream create a   # comment
# eventflow commented out
echo '{}' | eventflow publish a --stdin
eventflow sub create a b \\
    --start earliest
make run
```
## Next
```sh
eventflow after the tour
```
";
    assert_eq!(
        tour_commands(readme),
        [
            "eventflow stream create a   # comment",
            "echo '{}' | eventflow publish a --stdin",
            "eventflow sub create a b     --start earliest",
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_cli_line_of_the_readme_tour_exits_0_by_itself() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = tour_commands(&readme);
    assert!(
        commands.len() >= 5 && commands.iter().any(|c| c.starts_with("eventflow tail ")),
        "the tour's CLI lines were not found in README.md: {commands:?}"
    );

    let stack = Stack::start().await;
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_eventflow")).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    for line in &commands {
        let mut command = Command::new("bash");
        command
            .args(["-o", "pipefail", "-c", line])
            .env("PATH", &path)
            .env("EVENTFLOW_PUBLISHER_ADDR", format!("http://{}", stack.publisher.addr))
            .env("EVENTFLOW_SUBSCRIBER_ADDR", format!("http://{}", stack.subscriber.addr))
            .env("EVENTFLOW_ADMIN_ADDR", format!("http://{}", stack.admin.addr))
            .env("EVENTFLOW_DLQ_ADDR", format!("http://{}", stack.dlq.addr))
            .env_remove("EVENTFLOW_OUTPUT")
            .env_remove("EVENTFLOW_TIMEOUT")
            .env_remove("EVENTFLOW_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a hung line is ended with every process of its pipeline.
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().expect("start bash");
        let group = child.id().expect("a running child has a pid");
        let Ok(output) = tokio::time::timeout(LINE_DEADLINE, child.wait_with_output()).await else {
            let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{group}")]).status();
            panic!("tour line did not finish within {LINE_DEADLINE:?}: {line}");
        };
        let output = output.unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "tour line failed: {line}\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
