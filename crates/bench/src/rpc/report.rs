//! The tables of `warren bench rpc`, in Markdown: unary calls against tonic with ratios, the
//! hedging runs, the failover runs, and a line per goal saying whether it was met.

use std::fmt::Write;
use std::time::Duration;

use super::load::Errors;
use crate::chart::BarChart;
use crate::hist::Histogram;
use crate::report::{median, thousands};

/// What the report's header says.
#[derive(Debug, Default)]
pub struct Header {
    pub machine: String,
    pub background: String,
    pub pinning: String,
    pub settings: String,
    pub servers: String,
    pub command: String,
    pub elapsed: Duration,
}

/// One run of one unary row.
#[derive(Clone, Copy, Debug, Default)]
pub struct UnaryRun {
    /// Calls answered per second.
    pub rate: f64,
    /// The server's CPU time (user + system) per answered call, in seconds.
    pub cpu_per_call: Option<f64>,
    /// The load generator's CPU time per answered call, in seconds: the client's side of the
    /// cost (a busy-polling client spends its wait on the CPU).
    pub client_cpu_per_call: Option<f64>,
    /// The server's context switches (every thread, voluntary or not) per answered call.
    pub switches_per_call: Option<f64>,
}

/// A server and wire at one number of calls in flight, over its runs.
#[derive(Clone, Debug, Default)]
pub struct UnaryRow {
    pub name: String,
    pub in_flight: usize,
    pub runs: Vec<UnaryRun>,
    /// Every answered call of every run.
    pub latency: Histogram,
    pub errors: Errors,
    pub problems: Vec<String>,
    /// The row the others are divided by (tonic).
    pub baseline: bool,
    /// warren's binary framing: the rows the goal is about.
    pub binary: bool,
}

impl UnaryRow {
    fn rate(&self) -> Option<f64> {
        (!self.runs.is_empty()).then(|| median(&self.runs.iter().map(|r| r.rate).collect::<Vec<_>>()))
    }

    fn cpu_per_call(&self) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| r.cpu_per_call).collect();
        (!v.is_empty()).then(|| median(&v))
    }

    fn client_cpu_per_call(&self) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| r.client_cpu_per_call).collect();
        (!v.is_empty()).then(|| median(&v))
    }

    fn switches_per_call(&self) -> Option<f64> {
        let v: Vec<f64> = self.runs.iter().filter_map(|r| r.switches_per_call).collect();
        (!v.is_empty()).then(|| median(&v))
    }

    fn p50(&self) -> Option<u64> {
        self.latency.percentile(50.0)
    }
}

/// Unary calls per second: a group per number of calls in flight, a bar per server and wire.
pub fn unary_chart(rows: &[UnaryRow]) -> BarChart {
    let mut in_flight: Vec<usize> = rows.iter().map(|r| r.in_flight).collect();
    in_flight.sort_unstable();
    in_flight.dedup();
    let mut series: Vec<String> = Vec::new();
    for row in rows {
        if !series.contains(&row.name) {
            series.push(row.name.clone());
        }
    }
    let groups = in_flight
        .iter()
        .map(|&n| {
            let rate =
                |name: &String| rows.iter().find(|r| r.in_flight == n && &r.name == name).and_then(UnaryRow::rate);
            (format!("{n} in flight"), series.iter().map(rate).collect())
        })
        .collect();
    BarChart {
        title: "Remote calls per second: warren-rpc against tonic".into(),
        unit: "calls/s".into(),
        series,
        groups,
        note: "unary hello calls, median over runs".into(),
        ..BarChart::default()
    }
}

/// Latency for a table cell: µs below a millisecond, ms above.
pub fn latency(micros: Option<u64>) -> String {
    match micros {
        None => "–".into(),
        Some(us) if us < 1000 => format!("{us} µs"),
        Some(us) if us < 100_000 => format!("{:.2} ms", us as f64 / 1000.0),
        Some(us) => format!("{:.0} ms", us as f64 / 1000.0),
    }
}

/// `mine ÷ theirs`, as `1.52×`.
fn ratio(mine: Option<f64>, theirs: Option<f64>) -> String {
    match (mine, theirs) {
        (Some(m), Some(t)) if t > 0.0 => format!("{:.2}×", m / t),
        _ => "–".into(),
    }
}

fn spread(values: &[f64]) -> String {
    if values.len() < 2 {
        return String::new();
    }
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    format!(" [{}–{}]", thousands(lo), thousands(hi))
}

/// The unary table: one block per number of calls in flight, each row with its ratio to the
/// baseline row of that block.
pub fn unary_table(rows: &[UnaryRow]) -> String {
    let mut out = String::new();
    out.push_str(
        "| in flight | server and wire | calls/s (median [min–max]) | ÷ tonic | p50 | ÷ tonic | p99 | \
         server CPU per call | ÷ tonic | client CPU per call | server context switches per call | errors |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut levels: Vec<usize> = rows.iter().map(|r| r.in_flight).collect();
    levels.dedup();
    for level in levels {
        let block: Vec<&UnaryRow> = rows.iter().filter(|r| r.in_flight == level).collect();
        let base = block.iter().find(|r| r.baseline);
        let (base_rate, base_p50, base_cpu) = (
            base.and_then(|b| b.rate()),
            base.and_then(|b| b.p50()).map(|v| v as f64),
            base.and_then(|b| b.cpu_per_call()),
        );
        for row in block {
            if row.runs.is_empty() {
                let why = if row.problems.is_empty() { "not measured".to_owned() } else { row.problems.join("; ") };
                let _ = writeln!(out, "| {level} | {} | {why} | | | | | | | | | |", row.name);
                continue;
            }
            let rates: Vec<f64> = row.runs.iter().map(|r| r.rate).collect();
            let (rate, p50, cpu) = (row.rate(), row.p50(), row.cpu_per_call());
            let own = |s: String| if row.baseline { "1".to_owned() } else { s };
            let _ = writeln!(
                out,
                "| {level} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                row.name,
                thousands(rate.unwrap_or(0.0)),
                spread(&rates),
                own(ratio(rate, base_rate)),
                latency(p50),
                own(ratio(p50.map(|v| v as f64), base_p50)),
                latency(row.latency.percentile(99.0)),
                cpu.map_or("–".into(), |c| format!("{:.1} µs", c * 1e6)),
                own(ratio(cpu, base_cpu)),
                row.client_cpu_per_call().map_or("–".into(), |c| format!("{:.1} µs", c * 1e6)),
                row.switches_per_call().map_or("–".into(), |s| format!("{s:.1}")),
                row.errors.summary(),
            );
        }
    }
    out
}

/// For each number of calls in flight, each of the goals (≥ 1.5× tonic's calls/s,
/// ≤ 0.5× its p50, with the binary framing): the binary rows that meet it, or the closest one
/// when none does; then the rows that meet both.
pub fn unary_goals(rows: &[UnaryRow]) -> Vec<String> {
    let mut levels: Vec<usize> = rows.iter().map(|r| r.in_flight).collect();
    levels.dedup();
    let mut lines = Vec::new();
    for level in levels {
        let block: Vec<&UnaryRow> = rows.iter().filter(|r| r.in_flight == level).collect();
        let Some(base) = block.iter().find(|r| r.baseline) else { continue };
        let (Some(base_rate), Some(base_p50)) = (base.rate(), base.p50()) else { continue };
        // Each binary row measured, with its calls/s and its p50 as shares of tonic's.
        let binary: Vec<(&str, f64, f64)> = block
            .iter()
            .filter(|r| r.binary)
            .filter_map(|r| Some((r.name.as_str(), r.rate()? / base_rate, r.p50()? as f64 / base_p50.max(1) as f64)))
            .collect();
        if binary.is_empty() {
            continue;
        }
        // A goal on `value` (a share of tonic's), met at `bound` or on the better side of it.
        let goal = |what: &str, value: fn(&(&str, f64, f64)) -> f64, higher_is_better: bool, bound: f64| {
            let score = |r: &(&str, f64, f64)| if higher_is_better { value(r) } else { -value(r) };
            let mut ranked: Vec<_> = binary.iter().collect();
            ranked.sort_by(|a, b| score(b).total_cmp(&score(a)));
            let target = if higher_is_better { bound } else { -bound };
            let met: Vec<String> =
                ranked.iter().filter(|r| score(r) >= target).map(|r| format!("{} ({:.2}×)", r.0, value(r))).collect();
            if met.is_empty() {
                format!("{what}: not met (closest: {}, {:.2}×)", ranked[0].0, value(ranked[0]))
            } else {
                format!("{what}: met by {}", met.join(", "))
            }
        };
        let calls = goal("≥ 1.5× tonic's calls/s", |r| r.1, true, 1.5);
        let p50 = goal("≤ 0.5× its p50", |r| r.2, false, 0.5);
        let both: Vec<&str> = binary.iter().filter(|r| r.1 >= 1.5 && r.2 <= 0.5).map(|r| r.0).collect();
        let both = if both.is_empty() { "none".to_owned() } else { both.join(", ") };
        lines.push(format!("{level} in flight, goal {calls}; goal {p50}; both goals: {both}"));
    }
    lines
}

/// A client of the replicated object, in the hedging or failover runs.
#[derive(Clone, Debug, Default)]
pub struct TailRow {
    pub name: String,
    /// Answered calls per second, per run.
    pub rates: Vec<f64>,
    pub latency: Histogram,
    pub calls: u64,
    /// Copies sent because an answer was late, and because another copy failed.
    pub hedges: u64,
    pub failovers: u64,
    pub errors: Errors,
    pub problems: Vec<String>,
}

impl TailRow {
    /// Hedges as a share of calls, in percent.
    pub fn extra_percent(&self) -> f64 {
        let calls = self.calls + self.errors.total;
        if calls == 0 { 0.0 } else { 100.0 * (self.hedges + self.failovers) as f64 / calls as f64 }
    }
}

/// The table of the hedging or failover runs.
pub fn tail_table(rows: &[TailRow]) -> String {
    let mut out = String::from(
        "| client | calls answered | calls/s (median [min–max]) | p50 | p99 | p99.9 | max | extra copies \
         (hedges + failovers) | errors |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for row in rows {
        if row.rates.is_empty() {
            let why = if row.problems.is_empty() { "not measured".to_owned() } else { row.problems.join("; ") };
            let _ = writeln!(out, "| {} | {why} | | | | | | | |", row.name);
            continue;
        }
        let h = &row.latency;
        let _ = writeln!(
            out,
            "| {} | {} | {}{} | {} | {} | {} | {} | {:.2} % ({} + {}) | {} |",
            row.name,
            thousands(row.calls as f64),
            thousands(median(&row.rates)),
            spread(&row.rates),
            latency(h.percentile(50.0)),
            latency(h.percentile(99.0)),
            latency(h.percentile(99.9)),
            latency(h.percentile(100.0)),
            row.extra_percent(),
            row.hedges,
            row.failovers,
            row.errors.summary(),
        );
    }
    out
}

/// The hedging goal: p99.9 with hedging ≥ 10× lower than without, at ≤ 5 % extra calls.
pub fn hedging_goal(without: &TailRow, with: &TailRow) -> Option<String> {
    let (before, after) = (without.latency.percentile(99.9)?, with.latency.percentile(99.9)?);
    let lower = before as f64 / after.max(1) as f64;
    let extra = with.extra_percent();
    let verdict = |ok: bool| if ok { "met" } else { "not met" };
    Some(format!(
        "{}: p99.9 {} → {}, {lower:.1}× lower (goal ≥ 10×: {}), at {extra:.2} % extra calls (goal ≤ 5 %: {})",
        with.name,
        latency(Some(before)),
        latency(Some(after)),
        verdict(lower >= 10.0),
        verdict(extra <= 5.0)
    ))
}

/// The header and every section, as the file and the terminal get it.
pub fn markdown(header: &Header, sections: &[(String, String)]) -> String {
    let mut out = String::from("# warren bench rpc\n\n");
    let _ = writeln!(out, "- Machine: {}", header.machine);
    let _ = writeln!(out, "- CPU busy before the bench: {}", header.background);
    let _ = writeln!(out, "- Pinning: {}", header.pinning);
    let _ = writeln!(out, "- Settings: {}", header.settings);
    let _ = writeln!(out, "- Servers: {}", header.servers);
    let _ = writeln!(out, "- Command: `{}`, took {:.0} s", header.command, header.elapsed.as_secs_f64());
    for (title, body) in sections {
        let _ = write!(out, "\n## {title}\n\n{body}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(micros: &[u64]) -> Histogram {
        let mut h = Histogram::default();
        for &m in micros {
            h.record(Duration::from_micros(m));
        }
        h
    }

    fn row(name: &str, in_flight: usize, rates: &[f64], p50: u64, baseline: bool) -> UnaryRow {
        UnaryRow {
            name: name.into(),
            in_flight,
            runs: rates
                .iter()
                .map(|&rate| UnaryRun {
                    rate,
                    cpu_per_call: Some(1.0 / rate),
                    client_cpu_per_call: Some(3e-6),
                    switches_per_call: Some(2.0),
                })
                .collect(),
            latency: hist(&[p50, p50, p50 * 3]),
            baseline,
            binary: !baseline,
            ..UnaryRow::default()
        }
    }

    #[test]
    fn latencies_read_in_their_unit() {
        assert_eq!(latency(None), "–");
        assert_eq!(latency(Some(42)), "42 µs");
        assert_eq!(latency(Some(1500)), "1.50 ms");
        assert_eq!(latency(Some(150_000)), "150 ms");
    }

    #[test]
    fn rows_are_divided_by_the_baseline_of_their_block() {
        let rows = [
            row("tonic", 1, &[10_000.0, 9_000.0, 11_000.0], 100, true),
            row("warren", 1, &[20_000.0, 21_000.0, 19_000.0], 40, false),
            row("tonic", 64, &[50_000.0], 1000, true),
            row("warren", 64, &[60_000.0], 900, false),
        ];
        let table = unary_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 6, "{table}");
        assert!(lines[2].starts_with("| 1 | tonic | 10,000 [9,000–11,000] | 1 | 100 µs | 1 |"), "{}", lines[2]);
        assert!(lines[3].contains("| 2.00× | 40 µs | 0.40× |"), "{}", lines[3]);
        // CPU per call halves when the rate doubles (as the rows were made).
        assert!(lines[3].contains("| 50.0 µs | 0.50× | 3.0 µs | 2.0 | 0 |"), "{}", lines[3]);
        assert!(lines[5].contains("| 1.20× | 900 µs | 0.90× |"), "{}", lines[5]);

        let goals = unary_goals(&rows);
        assert_eq!(goals.len(), 2);
        assert_eq!(
            goals[0],
            "1 in flight, goal ≥ 1.5× tonic's calls/s: met by warren (2.00×); goal ≤ 0.5× its p50: met by warren \
             (0.40×); both goals: warren"
        );
        assert_eq!(
            goals[1],
            "64 in flight, goal ≥ 1.5× tonic's calls/s: not met (closest: warren, 1.20×); goal ≤ 0.5× its p50: not \
             met (closest: warren, 0.90×); both goals: none"
        );
    }

    #[test]
    fn each_goal_names_the_rows_that_meet_it() {
        let rows = [
            row("tonic", 1, &[10_000.0], 100, true),
            row("plain", 1, &[16_000.0], 60, false),
            row("polling", 1, &[19_000.0], 45, false),
            row("slow", 1, &[8_000.0], 120, false),
        ];
        let goals = unary_goals(&rows);
        assert_eq!(
            goals,
            ["1 in flight, goal ≥ 1.5× tonic's calls/s: met by polling (1.90×), plain (1.60×); goal ≤ 0.5× its \
              p50: met by polling (0.45×); both goals: polling"]
        );
    }

    #[test]
    fn a_row_without_runs_says_why() {
        let mut broken = row("warren hybrid", 1, &[], 1, false);
        broken.problems.push("server exited".into());
        let table = unary_table(&[row("tonic", 1, &[1.0], 1, true), broken]);
        assert!(table.contains("| 1 | warren hybrid | server exited |"), "{table}");
    }

    #[test]
    fn the_hedging_goal_compares_the_tails() {
        let mut tail = vec![100; 998];
        tail.extend([40_000, 40_000]);
        let without = TailRow { name: "none".into(), latency: hist(&tail), calls: 1000, ..TailRow::default() };
        let mut fast = vec![100; 998];
        fast.extend([1_100, 1_100]);
        let with =
            TailRow { name: "hedged".into(), latency: hist(&fast), calls: 1000, hedges: 30, ..TailRow::default() };
        let goal = hedging_goal(&without, &with).unwrap();
        assert!(goal.contains("40.00 ms → 1.10 ms, 36.4× lower (goal ≥ 10×: met)"), "{goal}");
        assert!(goal.contains("at 3.00 % extra calls (goal ≤ 5 %: met)"), "{goal}");
        let table = tail_table(&[TailRow { rates: vec![500.0], ..with }]);
        assert!(table.contains("| hedged | 1,000 | 500 | 100 µs | 100 µs | 1.10 ms | 1.10 ms | 3.00 % (30 + 0) | 0 |"));
    }
}
