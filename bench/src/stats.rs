//! Latency bookkeeping: per-connection vectors of microsecond samples, merged and
//! summarised by nearest-rank percentiles once a run is over.

use std::time::Duration;

/// Microseconds, saturating at `u32::MAX` (71 minutes, far beyond any request timeout),
/// so a sample costs four bytes.
pub fn micros(elapsed: Duration) -> u32 {
    u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX)
}

/// The nearest-rank percentile (`percent` in 0..=100) of ascending `sorted` samples, or
/// `None` when there are none.
pub fn percentile(sorted: &[u32], percent: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (percent / 100.0 * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p99 and maximum of a set of latency samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencySummary {
    pub count: usize,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

impl LatencySummary {
    /// Sorts `samples_us` in place and summarises them.
    pub fn from_micros(samples_us: &mut [u32]) -> Self {
        samples_us.sort_unstable();
        let to_ms = |value: Option<u32>| value.map(|us| f64::from(us) / 1000.0);
        LatencySummary {
            count: samples_us.len(),
            p50_ms: to_ms(percentile(samples_us, 50.0)),
            p99_ms: to_ms(percentile(samples_us, 99.0)),
            max_ms: to_ms(samples_us.last().copied()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<u32> = (1..=100).collect();
        assert_eq!(percentile(&samples, 50.0), Some(50));
        assert_eq!(percentile(&samples, 99.0), Some(99));
        assert_eq!(percentile(&samples, 100.0), Some(100));
        assert_eq!(percentile(&samples, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
        // With 1000 samples p99 is the 990th smallest, not the maximum.
        let samples: Vec<u32> = (1..=1000).collect();
        assert_eq!(percentile(&samples, 99.0), Some(990));
    }

    #[test]
    fn summary_sorts_and_converts_to_milliseconds() {
        let mut samples = vec![3_000, 1_000, 2_000, 250_000];
        let summary = LatencySummary::from_micros(&mut samples);
        assert_eq!(summary.count, 4);
        assert_eq!(summary.p50_ms, Some(2.0));
        assert_eq!(summary.p99_ms, Some(250.0));
        assert_eq!(summary.max_ms, Some(250.0));
        assert_eq!(LatencySummary::from_micros(&mut []).p50_ms, None);
        assert_eq!(micros(Duration::from_millis(1500)), 1_500_000);
    }
}
