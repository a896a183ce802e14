//! Rounds: the figures whose targets compare two runs of half a second or so (batch Publish,
//! PublishStream and Subscribe + Acknowledge against their baselines and peers) moved 10–20 %
//! between single runs on a shared 2-core host — enough to flip a verdict with nothing changed.
//! So they are measured `--rounds` times in one bench run, the sides taking turns going first
//! (round 0 eventflow first, round 1 its baselines first, ...), and each side's figure is its
//! median round; every round's rates are printed beside the figure. Each round writes to and
//! reads from streams of its own, so every round measures the same state (on one stream, the
//! dedup ids of earlier rounds made each later batch-publish round slower). Each side gets the
//! same treatment, so a median moves neither ratio's expectation, only its spread.

use crate::Run;

/// Whether round `round` measures eventflow before its baselines and peers.
pub fn eventflow_first(round: usize) -> bool {
    round.is_multiple_of(2)
}

/// The element of median rate (of an even count, the upper of the two middle ones).
pub fn median<T>(mut runs: Vec<T>, rate: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
    runs.swap_remove(runs.len() / 2)
}

/// The run of median rate.
pub fn median_run(runs: Vec<Run>) -> Run {
    median(runs, |run| run.rate)
}

/// Prints every round's rate of each side of figure `name`, in the order measured.
pub fn print(name: &str, sides: &[(&str, Vec<f64>)]) {
    let sides: Vec<String> = sides
        .iter()
        .map(|(label, rates)| {
            let rates: Vec<String> = rates.iter().map(|rate| format!("{rate:.0}")).collect();
            format!("{label} {}", rates.join(" / "))
        })
        .collect();
    println!("{name} rounds (ev/s, each figure the median): {}", sides.join("; "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_rate_whatever_the_order() {
        assert_eq!(median(vec![3.0, 1.0, 2.0], |r| *r), 2.0);
        assert_eq!(median(vec![5.0], |r| *r), 5.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0], |r| *r), 3.0);
    }

    #[test]
    fn sides_take_turns_going_first() {
        let firsts: Vec<bool> = (0..4).map(eventflow_first).collect();
        assert_eq!(firsts, [true, false, true, false]);
    }
}
