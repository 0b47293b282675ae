//! A latency histogram with bounded memory: a load run may complete millions of requests, and a
//! `Vec` of every sample would grow with the run, so samples go into log-linear buckets instead
//! (the HdrHistogram idea, cut down to what the table needs: p50 and p99).

use std::time::Duration;

/// Values below this many microseconds get a bucket each; above it each power of two is split
/// into `LINEAR / 2` buckets, so any recorded value is off by less than 0.2 %.
const LINEAR: u64 = 1024;
const SUB_BITS: u32 = LINEAR.trailing_zeros();
/// Enough buckets for any `u32` microsecond count (over an hour).
const BUCKETS: usize = (LINEAR / 2) as usize * (33 - SUB_BITS as usize) + LINEAR as usize;

/// Latencies in microseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self { counts: vec![0; BUCKETS], total: 0 }
    }
}

impl Histogram {
    /// Record one latency (saturating at `u32::MAX` µs).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).min(u64::from(u32::MAX));
        self.counts[index(micros)] += 1;
        self.total += 1;
    }

    /// Add every sample of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
    }

    /// The latency at or below which `p` percent of the samples lie (nearest rank), in
    /// microseconds; `None` when nothing was recorded.
    pub fn percentile(&self, p: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        // Nearest rank: the smallest sample with at least p% of the samples at or below it.
        let rank = ((p / 100.0 * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(value(i));
            }
        }
        None
    }
}

/// The bucket of `micros`: exact below `LINEAR`, then `LINEAR / 2` buckets per power of two.
fn index(micros: u64) -> usize {
    if micros < LINEAR {
        return micros as usize;
    }
    let shift = 64 - micros.leading_zeros() - SUB_BITS;
    (u64::from(shift) * (LINEAR / 2) + (micros >> shift)) as usize
}

/// The smallest value that falls into bucket `i`.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < LINEAR {
        return i;
    }
    let shift = i / (LINEAR / 2) - 1;
    (i - shift * (LINEAR / 2)) << shift
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(micros: impl IntoIterator<Item = u64>) -> Histogram {
        let mut h = Histogram::default();
        for m in micros {
            h.record(Duration::from_micros(m));
        }
        h
    }

    #[test]
    fn empty_has_no_percentiles() {
        assert_eq!(Histogram::default().percentile(50.0), None);
    }

    #[test]
    fn small_values_are_exact() {
        let h = of(1..=100);
        assert_eq!(h.percentile(50.0), Some(50));
        assert_eq!(h.percentile(99.0), Some(99));
        assert_eq!(h.percentile(100.0), Some(100));
        assert_eq!(h.percentile(0.0), Some(1));
    }

    #[test]
    fn large_values_are_within_a_fraction_of_a_percent() {
        for v in [1_024, 5_000, 123_456, 3_000_000, u64::from(u32::MAX)] {
            let got = of([v]).percentile(50.0).unwrap();
            assert!(got <= v && v - got <= v / 500, "{v} came back as {got}");
        }
    }

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut last = 0;
        for v in (0..40_000u64).chain([u64::from(u32::MAX)]) {
            let i = index(v);
            assert!(i >= last && i < BUCKETS, "{v} -> {i}");
            assert!(value(i) <= v);
            last = i;
        }
    }

    #[test]
    fn tail_percentile_sees_the_outlier() {
        let mut h = of(std::iter::repeat_n(100, 98));
        h.merge(&of([50_000, 60_000]));
        assert_eq!(h.total, 100);
        assert_eq!(h.percentile(50.0), Some(100));
        let p99 = h.percentile(99.0).unwrap();
        assert!((49_900..=50_000).contains(&p99), "{p99}");
    }
}
