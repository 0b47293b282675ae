//! Whether a series stayed flat: the mean of its last window against the mean of its first
//! window after the warm-up. Pure arithmetic over samples, so it is tested without a node.

use std::time::Duration;

/// How far the last window's mean may move from the first's and still be flat: the larger of
/// a fraction of the first mean and an absolute amount (2 MiB of RSS on a 10 MiB node is noise,
/// 10 % of it would not be).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound {
    pub relative: f64,
    pub absolute: f64,
}

impl Bound {
    fn allowed(self, base: f64) -> f64 {
        (self.relative * base.abs()).max(self.absolute)
    }
}

/// What a series did between the first window after the warm-up and the last window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trend {
    /// Within the bound.
    Flat,
    /// Up by more than the bound: the leak the soak looks for.
    Grew,
    /// Down by more than the bound (memory given back, connections drained): not a leak.
    Fell,
    /// The run was too short for two windows that do not overlap.
    TooShort,
}

impl Trend {
    pub fn word(self) -> &'static str {
        match self {
            Trend::Flat => "flat",
            Trend::Grew => "**grew**",
            Trend::Fell => "fell",
            Trend::TooShort => "run too short",
        }
    }
}

/// The two window means and the trend between them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Verdict {
    pub first: Option<f64>,
    pub last: Option<f64>,
    pub trend: Trend,
}

/// The windows: `window` long, the first starting at `warmup`, the last ending at the last
/// sample.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub warmup: Duration,
    pub window: Duration,
}

impl Windows {
    /// Judge `points` (time since the start, value), in time order.
    pub fn judge(self, points: &[(Duration, f64)], bound: Bound) -> Verdict {
        let Some(&(end, _)) = points.last() else {
            return Verdict { first: None, last: None, trend: Trend::TooShort };
        };
        let first_end = self.warmup + self.window;
        let last_start = end.saturating_sub(self.window);
        let first = mean(points.iter().filter(|(t, _)| *t >= self.warmup && *t < first_end));
        let last = mean(points.iter().filter(|(t, _)| *t >= last_start && *t > self.warmup));
        let trend = match (first, last) {
            (Some(first), Some(last)) if first_end <= last_start => {
                let allowed = bound.allowed(first);
                if last - first > allowed {
                    Trend::Grew
                } else if first - last > allowed {
                    Trend::Fell
                } else {
                    Trend::Flat
                }
            }
            _ => Trend::TooShort,
        };
        Verdict { first, last, trend }
    }
}

fn mean<'a>(points: impl Iterator<Item = &'a (Duration, f64)>) -> Option<f64> {
    let (sum, n) = points.fold((0.0, 0u32), |(sum, n), (_, v)| (sum + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSS: Bound = Bound { relative: 0.10, absolute: 2048.0 };
    const FDS: Bound = Bound { relative: 0.0, absolute: 8.0 };
    const WINDOWS: Windows = Windows { warmup: Duration::from_secs(60), window: Duration::from_secs(60) };

    /// One sample every 10 s for `minutes`, valued by `f(seconds)`.
    fn series(minutes: u64, f: impl Fn(u64) -> f64) -> Vec<(Duration, f64)> {
        (0..=minutes * 6).map(|i| (Duration::from_secs(i * 10), f(i * 10))).collect()
    }

    #[test]
    fn noise_within_the_bound_is_flat() {
        // 50 MiB wobbling by 3 MiB: inside 10 %.
        let points = series(10, |s| 51_200.0 + if s % 20 == 0 { 3072.0 } else { 0.0 });
        let verdict = WINDOWS.judge(&points, RSS);
        assert_eq!(verdict.trend, Trend::Flat, "{verdict:?}");
    }

    #[test]
    fn warm_up_growth_is_not_counted() {
        // Climbs from 10 to 40 MiB in the first minute, then stays.
        let points = series(10, |s| if s < 60 { 10_240.0 + 512.0 * s as f64 } else { 40_960.0 });
        assert_eq!(WINDOWS.judge(&points, RSS).trend, Trend::Flat);
    }

    #[test]
    fn a_steady_leak_grows() {
        // 1 MiB a minute on 20 MiB: 8 MiB between the windows, over 2 MiB and over 10 %.
        let points = series(10, |s| 20_480.0 + 1024.0 * s as f64 / 60.0);
        let verdict = WINDOWS.judge(&points, RSS);
        assert_eq!(verdict.trend, Trend::Grew, "{verdict:?}");
        assert!(verdict.last.unwrap() > verdict.first.unwrap());
    }

    #[test]
    fn small_nodes_get_the_absolute_bound() {
        // 1.5 MiB more on a 5 MiB node is 30 %, but under the 2 MiB floor.
        let points = series(5, |s| if s >= 240 { 5120.0 + 1536.0 } else { 5120.0 });
        assert_eq!(WINDOWS.judge(&points, RSS).trend, Trend::Flat);
    }

    #[test]
    fn descriptors_have_an_absolute_bound_either_way() {
        let leak = series(10, |s| 40.0 + (s / 30) as f64);
        assert_eq!(WINDOWS.judge(&leak, FDS).trend, Trend::Grew);
        let drained = series(10, |s| if s > 400 { 20.0 } else { 40.0 });
        assert_eq!(WINDOWS.judge(&drained, FDS).trend, Trend::Fell);
        let steady = series(10, |s| 40.0 + (s % 7) as f64);
        assert_eq!(WINDOWS.judge(&steady, FDS).trend, Trend::Flat);
    }

    #[test]
    fn overlapping_windows_are_too_short() {
        let points = series(2, |_| 1.0);
        assert_eq!(WINDOWS.judge(&points, FDS).trend, Trend::TooShort);
        assert_eq!(WINDOWS.judge(&[], FDS).trend, Trend::TooShort);
        // Exactly two windows after the warm-up is enough.
        assert_eq!(WINDOWS.judge(&series(3, |_| 1.0), FDS).trend, Trend::Flat);
    }
}
