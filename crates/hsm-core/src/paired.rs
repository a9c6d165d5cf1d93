//! Paired measurements for the benchmarks: a provider against the raw library it wraps, in
//! alternating rounds on one machine.
//!
//! A shared machine's load drifts, and criterion measures one benchmark after another, so
//! drift lands in the ratio of two criterion figures. Here both sides run in every round, in
//! an order swapped each round, and the result is the median of the per-round ratios, which
//! such drift does not bias.

use std::time::Duration;

/// What [`run`] measured.
#[derive(Clone, Copy, Debug)]
pub struct Paired {
    /// Median round time of the provider.
    pub ours: Duration,
    /// Median round time of the raw library.
    pub raw: Duration,
    /// Median of the per-round throughput ratios, provider / raw (raw time / provider time):
    /// 0.98 means the provider does 98% of the raw library's work per second.
    pub ratio: f64,
    /// The lowest per-round ratio.
    pub min: f64,
    /// The highest per-round ratio.
    pub max: f64,
    /// How many rounds were measured (after one untimed warm-up of each side).
    pub rounds: usize,
}

/// Runs `round(false)` (raw) and `round(true)` (the provider) once each to warm up, then
/// `rounds` times each in alternating order; `round` returns the time its batch took.
pub fn run(rounds: usize, mut round: impl FnMut(bool) -> Duration) -> Paired {
    assert!(rounds > 0, "a paired measurement needs at least one round");
    round(false);
    round(true);
    let (mut raw, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..rounds {
        let (r, o) = if i % 2 == 0 {
            let r = round(false);
            (r, round(true))
        } else {
            let o = round(true);
            (round(false), o)
        };
        ratios.push(r.as_secs_f64() / o.as_secs_f64());
        raw.push(r);
        ours.push(o);
    }
    raw.sort();
    ours.sort();
    ratios.sort_by(f64::total_cmp);
    Paired {
        ours: ours[rounds / 2],
        raw: raw[rounds / 2],
        ratio: ratios[rounds / 2],
        min: ratios[0],
        max: ratios[rounds - 1],
        rounds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alternates_and_takes_medians() {
        let mut calls = Vec::new();
        // Raw batches take 10 ms; the provider's 12.5 ms except for one outlier round.
        let p = run(5, |ours| {
            calls.push(ours);
            let n = calls.iter().filter(|&&o| o == ours).count();
            Duration::from_micros(match (ours, n) {
                (false, _) => 10_000,
                (true, 4) => 50_000,
                (true, _) => 12_500,
            })
        });
        assert_eq!(
            calls,
            [
                false, true, false, true, true, false, false, true, true, false, false, true
            ]
        );
        assert_eq!(p.raw, Duration::from_millis(10));
        assert_eq!(p.ours, Duration::from_micros(12_500));
        assert!((p.ratio - 0.8).abs() < 1e-9, "{}", p.ratio);
        assert!((p.min - 0.2).abs() < 1e-9 && (p.max - 0.8).abs() < 1e-9);
    }
}
