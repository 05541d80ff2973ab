//! Summaries of measured samples (milliseconds): nearest-rank percentiles, as reported by the
//! latency test.

use std::fmt;

/// min / p50 / p99 / max and the mean of a sample set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

/// The nearest-rank `p`-th percentile (0 < p <= 100) of sorted, non-empty `sorted`.
fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// Summarise `samples`; `None` when there are none (or any is NaN).
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() || samples.iter().any(|s| s.is_nan()) {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    Some(Summary {
        n: sorted.len(),
        min: sorted[0],
        p50: nearest_rank(&sorted, 50.0),
        p99: nearest_rank(&sorted, 99.0),
        max: sorted[sorted.len() - 1],
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    })
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} min={:.2} p50={:.2} p99={:.2} max={:.2} mean={:.2} (ms)",
            self.n, self.min, self.p50, self.p99, self.max, self.mean
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (min, p50, p99, max)
    type Expected = Option<(f64, f64, f64, f64)>;

    #[test]
    fn percentiles_at_the_edges() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let cases: [(&[f64], Expected); 6] = [
            (&[], None),
            (&[f64::NAN, 1.0], None),
            (&[7.0], Some((7.0, 7.0, 7.0, 7.0))),
            (&[2.0, 1.0], Some((1.0, 1.0, 2.0, 2.0))),
            (&[-3.0, 5.0, 1.0], Some((-3.0, 1.0, 5.0, 5.0))),
            (&hundred, Some((1.0, 50.0, 99.0, 100.0))),
        ];
        for (samples, want) in cases {
            let got = summarize(samples).map(|s| (s.min, s.p50, s.p99, s.max));
            assert_eq!(got, want, "{samples:?}");
        }
        let s = summarize(&[1.0, 2.0, 3.0, 4.0]).map(|s| s.mean);
        assert_eq!(s, Some(2.5));
    }
}
