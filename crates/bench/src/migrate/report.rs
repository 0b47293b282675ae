//! `warren bench migrate`'s tables, goals and chart.

use std::fmt::Write as _;
use std::time::Duration;

use super::overhead::Overhead;
use crate::chart::{BarChart, Format};

/// One state size's hops.
#[derive(Clone, Debug)]
pub struct HopRow {
    pub label: &'static str,
    pub state_bytes: usize,
    /// The encoded snapshot of that state, measured in this process.
    pub snapshot_bytes: usize,
    /// Every timed hop, over every run.
    pub samples: Vec<Duration>,
    /// Why it was not measured, if it was not.
    pub failed: Option<String>,
    /// The goal for the p50.
    pub goal: Duration,
}

impl HopRow {
    fn percentile(&self, p: f64) -> Option<Duration> {
        let mut sorted = self.samples.clone();
        sorted.sort();
        let last = sorted.len().checked_sub(1)?;
        Some(sorted[(last as f64 * p).round() as usize])
    }

    pub fn p50(&self) -> Option<Duration> {
        self.percentile(0.5)
    }
}

/// The goal for each loop's Asyncified ÷ plain: the tight loop is the worst case.
pub fn overhead_goal(entry: &str) -> f64 {
    if entry == "sum" { 1.5 } else { 1.2 }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 { format!("{ms:.2} ms") } else { format!("{ms:.1} ms") }
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "not met" }
}

/// The hops' table.
pub fn hop_table(rows: &[HopRow]) -> String {
    let mut out = String::from(
        "| state | snapshot | snapshot ÷ state | hops timed | p50 | p99 | goal (p50) | |\n|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let ratio = row.snapshot_bytes as f64 / row.state_bytes as f64;
        let (p50, p99, met) = match (&row.failed, row.p50(), row.percentile(0.99)) {
            (None, Some(p50), Some(p99)) => (ms(p50), ms(p99), verdict(p50 < row.goal)),
            (Some(why), ..) => (format!("not measured: {}", why.replace('|', "\\|")), "–".into(), "not met"),
            _ => ("no samples".into(), "–".into(), "not met"),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {ratio:.3} | {} | {p50} | {p99} | < {} | {met} |",
            row.label,
            kib(row.snapshot_bytes),
            row.samples.len(),
            ms(row.goal)
        );
    }
    out
}

/// The safe points' table.
pub fn overhead_table(rows: &[Overhead]) -> String {
    let mut out = String::from(
        "| loop | iterations | plain | + flag check | + flag check + Asyncify | Asyncified ÷ plain | goal | |\n\
         |---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let goal = overhead_goal(row.entry);
        let what = if row.entry == "sum" { "`sum` (tight: worst case)" } else { "`mix` (load, hash, store)" };
        let _ = writeln!(
            out,
            "| {what} | {} | {} | {} | {} | {:.2}× | ≤ {goal:.1}× | {} |",
            row.iterations,
            ms(row.plain),
            ms(row.checked),
            ms(row.mobile),
            row.ratio(),
            verdict(row.ratio() <= goal)
        );
    }
    out
}

/// Every figure divided by its goal: a bar under the line met it.
pub fn chart(hops: &[HopRow], overhead: &[Overhead]) -> BarChart {
    let mut groups = Vec::new();
    for row in hops {
        let value = row.p50().filter(|_| row.failed.is_none()).map(|p50| p50.as_secs_f64() / row.goal.as_secs_f64());
        groups.push((format!("{} hop p50", row.label), vec![value]));
    }
    for row in overhead {
        groups.push((format!("{} safe points", row.entry), vec![Some(row.ratio() / overhead_goal(row.entry))]));
    }
    BarChart {
        title: "warren bench migrate: each figure ÷ its goal".into(),
        unit: "÷ goal".into(),
        series: vec!["measured ÷ goal".into()],
        groups,
        reference: Some((1.0, "the goal (under it: met)".into())),
        format: Format::Ratio,
        note: "hop p50 against 5 ms (≤ 1 MiB) or 150 ms (64 MiB); Asyncified ÷ plain against 1.5× (sum) or 1.2× (mix)"
            .into(),
    }
}
