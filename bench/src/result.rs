//! The machine-readable end of every figure: one line
//! `RESULT <name> eventflow=<v> <peer>=<v> ratio=<r> target=<t> PASS|MISS|INFO`.
//!
//! * A ratio figure compares eventflow with one peer: `ratio` is eventflow / peer (both rates,
//!   higher is better) and `target` is the smallest ratio that passes (`target=0.70`).
//! * An absolute figure (a latency, a memory peak, a time) has no peer: `peer=n/a ratio=n/a`,
//!   and `target=<=<v>` is the largest value that passes, in the unit the name ends with
//!   (`_ms`, `_mib`); an absolute rate without a peer has `target=>=<v>`, the smallest value
//!   that passes.
//! * A figure the issue gives no target for ends in `target=none INFO`: printed so the run's
//!   note has it, never a pass or a miss.
//!
//! Values of 100 and more are printed without decimals, smaller ones with two.

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// eventflow / peer must be at least this.
    Ratio(f64),
    /// The value must be at most this.
    AtMost(f64),
    /// The value must be at least this (a rate without a peer).
    AtLeast(f64),
    /// No target: for information.
    None,
}

/// The peer of a ratio figure: its label in the line (`redis_xadd_pipelined`, `jetstream`, ...)
/// and its value.
pub type Peer<'a> = Option<(&'a str, f64)>;

/// The `RESULT` line of figure `name`.
pub fn line(name: &str, eventflow: f64, peer: Peer<'_>, target: Target) -> String {
    let ratio = peer.map(|(_, value)| eventflow / value.max(1e-9));
    let peer_part = peer.map_or_else(|| "peer=n/a".to_string(), |(label, value)| format!("{label}={}", num(value)));
    let ratio_part = ratio.map_or_else(|| "n/a".to_string(), |r| format!("{r:.2}"));
    let (target_part, verdict) = match target {
        Target::Ratio(min) => (format!("{min:.2}"), pass_or_miss(ratio.is_some_and(|r| r >= min))),
        Target::AtMost(max) => (format!("<={}", num(max)), pass_or_miss(eventflow <= max)),
        Target::AtLeast(min) => (format!(">={}", num(min)), pass_or_miss(eventflow >= min)),
        Target::None => ("none".to_string(), "INFO"),
    };
    format!("RESULT {name} eventflow={} {peer_part} ratio={ratio_part} target={target_part} {verdict}", num(eventflow))
}

/// Prints the `RESULT` line of figure `name`.
pub fn print(name: &str, eventflow: f64, peer: Peer<'_>, target: Target) {
    println!("{}", line(name, eventflow, peer, target));
}

fn pass_or_miss(met: bool) -> &'static str {
    if met { "PASS" } else { "MISS" }
}

/// A value with no decimals from 100 up, else two.
fn num(value: f64) -> String {
    if value.abs() >= 100.0 { format!("{value:.0}") } else { format!("{value:.2}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratio_figure_passes_at_or_above_the_target() {
        let l = line("batch_publish", 70_000.0, Some(("redis_xadd_pipelined", 100_000.0)), Target::Ratio(0.7));
        assert_eq!(l, "RESULT batch_publish eventflow=70000 redis_xadd_pipelined=100000 ratio=0.70 target=0.70 PASS");
        let l = line("batch_publish", 45_000.0, Some(("jetstream", 120_000.0)), Target::Ratio(1.0));
        assert_eq!(l, "RESULT batch_publish eventflow=45000 jetstream=120000 ratio=0.38 target=1.00 MISS");
    }

    #[test]
    fn absolute_figure_passes_at_or_below_the_target() {
        let l = line("e2e_latency_p99_ms", 5.2, None, Target::AtMost(2.0));
        assert_eq!(l, "RESULT e2e_latency_p99_ms eventflow=5.20 peer=n/a ratio=n/a target=<=2.00 MISS");
        let l = line("relay_rate", 25_000.0, None, Target::AtLeast(20_000.0));
        assert_eq!(l, "RESULT relay_rate eventflow=25000 peer=n/a ratio=n/a target=>=20000 PASS");
        let l = line("rss_publisher_mib", 40.0, None, Target::AtMost(64.0));
        assert_eq!(l, "RESULT rss_publisher_mib eventflow=40.00 peer=n/a ratio=n/a target=<=64.00 PASS");
    }

    #[test]
    fn figure_without_target_is_information() {
        let l = line("unary_publish", 15_500.0, Some(("jetstream_publish_ack", 104_000.0)), Target::None);
        assert_eq!(l, "RESULT unary_publish eventflow=15500 jetstream_publish_ack=104000 ratio=0.15 target=none INFO");
    }

    #[test]
    fn ratio_target_without_peer_misses() {
        assert!(line("x", 1.0, None, Target::Ratio(0.5)).ends_with("ratio=n/a target=0.50 MISS"));
    }
}
