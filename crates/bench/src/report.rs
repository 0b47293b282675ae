//! The chapter's table, rendered: Markdown for the terminal and `models.md`, and an SVG bar
//! chart of the two throughput regimes for `models.svg`. Pure functions of the results, so they
//! are tested without running anything.

use std::fmt::Write;
use std::time::Duration;

use crate::chart::BarChart;
use crate::idle::{Idle, Stall};
use crate::load::Load;
use crate::probe::Usage;

/// One idle level's counts and the server tree's usage while they were held, or why it could
/// not be measured.
pub type IdleOutcome = Result<(Idle, Usage), String>;

/// Everything measured for one model (or one variant, such as `event --helpers 2`).
#[derive(Clone, Debug, Default)]
pub struct Row {
    pub name: String,
    /// One entry per run, in run order.
    pub keep_alive: Vec<Load>,
    pub new_conn: Vec<Load>,
    /// Peak of the server's process tree over the throughput runs.
    pub peak: Option<Usage>,
    /// Per idle level: the outcome and the tree's usage while the connections were held.
    pub idle: Vec<(usize, IdleOutcome)>,
    pub blocking: Option<Result<Stall, String>>,
    /// What went wrong around the measurements (a server that would not start or died).
    pub problems: Vec<String>,
}

/// `models.svg`: keep-alive and new-connection requests per second, a pair of bars per model
/// (variants measured only for the blocking call are left out).
pub fn chart(rows: &[Row]) -> BarChart {
    let rate = |loads: &[Load]| (!loads.is_empty()).then(|| median(&loads.iter().map(|l| l.rate).collect::<Vec<_>>()));
    chart_of(
        rows.iter()
            .filter(|r| !r.keep_alive.is_empty() || !r.new_conn.is_empty())
            .map(|r| (r.name.clone(), vec![rate(&r.keep_alive), rate(&r.new_conn)]))
            .collect(),
    )
}

/// The chart of `groups`: a model and its keep-alive and new-connection rates, from a run or
/// from a recorded table (`warren bench chart`).
pub fn chart_of(groups: Vec<(String, Vec<Option<f64>>)>) -> BarChart {
    BarChart {
        title: "warren server models: echo requests per second".into(),
        unit: "req/s".into(),
        series: vec!["keep-alive".into(), "new connection per request".into()],
        groups,
        note: "median over runs; same machine, same run".into(),
        ..BarChart::default()
    }
}

/// The lines above the table.
#[derive(Clone, Debug, Default)]
pub struct Header {
    pub machine: String,
    pub pinning: String,
    /// How busy each CPU was just before the bench started.
    pub background: String,
    pub settings: String,
    /// How the servers were started.
    pub servers: String,
    pub command: String,
    pub elapsed: Duration,
}

/// The Markdown report: header, table, then notes on anything that needs a word.
pub fn markdown(header: &Header, rows: &[Row], idle_levels: &[usize]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## warren bench models\n");
    let _ = writeln!(out, "- machine: {}", header.machine);
    let _ = writeln!(out, "- pinning: {}", header.pinning);
    let _ = writeln!(out, "- busy before the bench started (other work on this machine): {}", header.background);
    let _ = writeln!(out, "- load: {}", header.settings);
    let _ = writeln!(out, "- servers: {}", header.servers);
    let _ = writeln!(out, "- command: `{}`", header.command);
    let _ = writeln!(out, "- took: {:.0} s\n", header.elapsed.as_secs_f64());
    let mut head = vec!["model", "keep-alive req/s", "p50 / p99 µs", "new-conn req/s", "p50 / p99 µs"];
    head.extend(["peak threads", "peak procs", "peak RSS MiB"]);
    let idle_heads: Vec<String> = idle_levels.iter().map(|&n| format!("{} idle", short_count(n))).collect();
    head.extend(idle_heads.iter().map(String::as_str));
    head.push("blocking call");
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(head.len()));
    for row in rows {
        let mut cells = vec![format!("**{}**", row.name)];
        cells.push(rate_cell(&row.keep_alive));
        cells.push(latency_cell(&row.keep_alive));
        cells.push(rate_cell(&row.new_conn));
        cells.push(latency_cell(&row.new_conn));
        match row.peak {
            Some(p) => cells.extend([
                thousands(p.threads as f64),
                thousands(p.processes as f64),
                format!("{:.1}", p.rss_mib()),
            ]),
            None => cells.extend(["—".into(), "—".into(), "—".into()]),
        }
        for &level in idle_levels {
            cells.push(match row.idle.iter().find(|(n, _)| *n == level) {
                Some((_, Ok((idle, usage)))) => idle_cell(idle, usage),
                Some((_, Err(e))) => format!("error: {}", escape_cell(e)),
                None => "—".into(),
            });
        }
        cells.push(match &row.blocking {
            Some(Ok(stall)) => stall_cell(stall),
            Some(Err(e)) => format!("error: {}", escape_cell(e)),
            None => "—".into(),
        });
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
    out.push_str(&notes(rows));
    out
}

fn notes(rows: &[Row]) -> String {
    let mut out = String::from(
        "\nReading the table: req/s is the median over runs (min–max when there were several); latency is \
         closed-loop (send to last echoed byte, as wrk measures it); peak threads, processes and RSS cover \
         the server's whole process tree during the throughput runs, RSS summed over processes (pages a \
         fork shares count once per process). Idle cells: served / refused / failed connections, then the \
         tree's RSS (and its PSS, which splits each shared page among its sharers: what the tree really \
         holds), threads (t) and processes (p) while they were held. A starved client completed no \
         request within the run (the most any run had). Blocking call: client B connects \
         20 ms after client A, whose connection makes the blocking call.\n",
    );
    let mut details = Vec::new();
    for row in rows {
        details.extend(row.problems.iter().map(|p| format!("{}: {p}", row.name)));
        for (regime, loads) in [("keep-alive", &row.keep_alive), ("new-conn", &row.new_conn)] {
            let errors: u64 = loads.iter().map(|l| l.errors).sum();
            if let Some(first) = loads.iter().find_map(|l| l.first_error.as_ref()) {
                details.push(format!("{} {regime}: {errors} failed, first: {first}", row.name));
            }
        }
        for (level, outcome) in &row.idle {
            if let Ok((idle, _)) = outcome
                && let Some(first) = &idle.first_error
            {
                details.push(format!(
                    "{} {} idle: {} failed, first: {first}",
                    row.name,
                    short_count(*level),
                    idle.failed
                ));
            }
        }
    }
    if !details.is_empty() {
        out.push('\n');
        for d in details {
            let _ = writeln!(out, "- {d}");
        }
    }
    out
}

fn rate_cell(loads: &[Load]) -> String {
    if loads.is_empty() {
        return "—".into();
    }
    let rates: Vec<f64> = loads.iter().map(|l| l.rate).collect();
    let mut cell = thousands(median(&rates));
    if rates.len() > 1 {
        let (lo, hi) = rates.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &r| (lo.min(r), hi.max(r)));
        let _ = write!(cell, " ({}–{})", thousands(lo), thousands(hi));
    }
    // Shown because a rate alone hides who got it: `iterative` serves one keep-alive client
    // for the whole run while the rest wait.
    let starved = loads.iter().map(|l| l.starved).max().unwrap_or(0);
    if starved > 0 {
        let clients = loads.iter().map(|l| l.clients).max().unwrap_or(0);
        let _ = write!(cell, " · {starved}/{clients} clients starved");
    }
    let errors: u64 = loads.iter().map(|l| l.errors).sum();
    if errors > 0 {
        let _ = write!(cell, " · {} failed", thousands(errors as f64));
    }
    cell
}

fn latency_cell(loads: &[Load]) -> String {
    let pick = |f: fn(&Load) -> Option<u64>| {
        let values: Vec<f64> = loads.iter().filter_map(f).map(|v| v as f64).collect();
        if values.is_empty() { "—".to_owned() } else { thousands(median(&values)) }
    };
    let (p50, p99) = (pick(|l| l.p50), pick(|l| l.p99));
    if p50 == "—" { p50 } else { format!("{p50} / {p99}") }
}

fn idle_cell(idle: &Idle, usage: &Usage) -> String {
    let pss = usage.pss_kib.map(|kib| format!(" (PSS {:.1})", kib as f64 / 1024.0)).unwrap_or_default();
    format!(
        "{}/{}/{} · {:.1} MiB{pss} · {}t/{}p",
        idle.served,
        idle.refused,
        idle.failed,
        usage.rss_mib(),
        thousands(usage.threads as f64),
        thousands(usage.processes as f64)
    )
}

fn stall_cell(stall: &Stall) -> String {
    match stall {
        Stall::Stalled(w) => format!("stalls (B waited {})", millis(*w)),
        Stall::Unaffected(w) => format!("no stall ({})", millis(*w)),
        Stall::NoAnswer(limit) => format!("stalls (B got nothing in {})", millis(*limit)),
    }
}

fn millis(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 { format!("{ms:.1} ms") } else { format!("{ms:.0} ms") }
}

/// Keep a cell on one table row whatever an error message contains.
fn escape_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The median; the mean of the middle two for an even count; 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// `12345.6` → `12,346`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `10000` → `10k`, for column headings.
fn short_count(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) { format!("{}k", n / 1000) } else { n.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(rate: f64, p50: u64, p99: u64) -> Load {
        Load { rate, p50: Some(p50), p99: Some(p99), clients: 50, ..Load::default() }
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1234.0), "1,234");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(short_count(10_000), "10k");
        assert_eq!(short_count(1500), "1500");
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
    }

    #[test]
    fn several_runs_show_median_and_spread() {
        let loads = [load(30_000.0, 20, 90), load(10_000.0, 40, 300), load(20_000.0, 30, 100)];
        assert_eq!(rate_cell(&loads), "20,000 (10,000–30,000)");
        assert_eq!(latency_cell(&loads), "30 / 100");
        assert_eq!(rate_cell(&loads[..1]), "30,000");
    }

    #[test]
    fn table_has_a_row_per_model_and_notes_errors() {
        let mut stuck = load(5_000.0, 10, 2_000_000);
        stuck.errors = 49;
        stuck.starved = 49;
        stuck.first_error = Some("no echo within 2s".into());
        let rows = vec![
            Row {
                name: "iterative".into(),
                keep_alive: vec![stuck],
                new_conn: vec![load(4_000.0, 200, 900)],
                peak: Some(Usage { processes: 1, threads: 1, rss_kib: 2048, pss_kib: None }),
                idle: vec![(
                    1000,
                    Ok((Idle { served: 1, refused: 0, failed: 999, first_error: None }, Usage::default())),
                )],
                blocking: Some(Ok(Stall::Stalled(Duration::from_millis(281)))),
                problems: vec![],
            },
            Row {
                name: "event --helpers 2".into(),
                blocking: Some(Ok(Stall::Unaffected(Duration::from_micros(400)))),
                ..Row::default()
            },
        ];
        let md = markdown(&Header::default(), &rows, &[1000, 10_000]);
        let table: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(table.len(), 4, "{md}");
        assert!(table.iter().all(|l| l.matches(" | ").count() == 10), "{md}");
        assert!(
            table[2].contains("5,000 · 49/50 clients starved · 49 failed") && table[2].contains("1/0/999 · 0.0 MiB"),
            "{md}"
        );
        assert!(table[2].contains("stalls (B waited 281 ms)") && table[3].contains("no stall (0.4 ms)"), "{md}");
        assert!(md.contains("- iterative keep-alive: 49 failed, first: no echo within 2s"), "{md}");
    }
}
