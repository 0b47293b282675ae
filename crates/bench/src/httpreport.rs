//! `http.md` and `http.svg`: the results of `warren bench http`, as ratios to nginx.

use std::fmt::Write;
use std::time::Duration;

use crate::chart::{BarChart, Format};
use crate::report::median;
use crate::wrk::{Idle, Wrk};

/// One load shape.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    pub file: &'static str,
    pub close: bool,
    pub conns: usize,
}

impl Scenario {
    pub fn label(&self) -> String {
        let size = if self.file.starts_with("1k") { "1 KiB" } else { "1 MiB" };
        let regime = if self.close { "close" } else { "keep-alive" };
        format!("{size} {regime} c{}", self.conns)
    }
}

/// One wrk run and what it cost the server.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub wrk: Wrk,
    /// The server's CPU time (user + system, its whole process tree) over the run, in seconds.
    pub server_cpu: f64,
    /// How long the run took, wrk's start to its exit, in seconds.
    pub wall: f64,
}

impl Run {
    /// Requests answered per second of server CPU; `None` when too little CPU was charged to
    /// tell (under a clock tick).
    pub fn per_cpu_second(&self) -> Option<f64> {
        (self.server_cpu >= 0.01).then(|| self.wrk.requests as f64 / self.server_cpu)
    }

    /// The share of one CPU the server was busy during the run.
    pub fn busy(&self) -> f64 {
        if self.wall > 0.0 { self.server_cpu / self.wall } else { 0.0 }
    }
}

/// Every wrk run of one server in one scenario.
#[derive(Clone, Debug, Default)]
pub struct Cell {
    pub runs: Vec<Run>,
}

impl Cell {
    fn rate(&self) -> Option<f64> {
        (!self.runs.is_empty()).then(|| median(&self.runs.iter().map(|r| r.wrk.rate).collect::<Vec<_>>()))
    }

    fn per_cpu(&self) -> Vec<f64> {
        self.runs.iter().filter_map(Run::per_cpu_second).collect()
    }

    /// The median of requests per server CPU-second.
    fn efficiency(&self) -> Option<f64> {
        let per_cpu = self.per_cpu();
        (!per_cpu.is_empty()).then(|| median(&per_cpu))
    }

    fn busy(&self) -> Option<f64> {
        (!self.runs.is_empty()).then(|| median(&self.runs.iter().map(Run::busy).collect::<Vec<_>>()))
    }
}

#[derive(Clone, Debug, Default)]
pub struct ServerRow {
    pub name: String,
    pub cells: Vec<Cell>,
    /// Peak RSS of the process tree over all its runs.
    pub rss_kib: u64,
    pub problems: Vec<String>,
}

/// How one server held the idle connections: outcome, RSS KiB before, RSS KiB while holding.
pub type IdleOutcome = (Idle, u64, u64);

pub struct Report {
    pub machine: String,
    pub pinning: String,
    pub nginx: String,
    pub settings: String,
    pub command: String,
    pub elapsed: Duration,
    pub scenarios: Vec<Scenario>,
    pub rows: Vec<ServerRow>,
    /// Server, then (outcome, RSS KiB before, RSS KiB while holding) or why it did not start.
    pub idle: Vec<(String, Result<IdleOutcome, String>)>,
}

/// `61234.5` → `61.2k`.
fn short(v: f64) -> String {
    if v >= 1000.0 { format!("{:.1}k", v / 1000.0) } else { format!("{v:.0}") }
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn markdown(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# warren bench http\n");
    let _ = writeln!(s, "- Machine: {}", r.machine);
    let _ = writeln!(s, "- Pinning: {}", r.pinning);
    let _ = writeln!(
        s,
        "- nginx: {} (`worker_processes 1`, `access_log off` unless said below, `sendfile on`, `tcp_nopush on`, \
         `keepalive_requests 1000000`); warren: `warren serve http --model M -d 0 --max-conns 20000`",
        r.nginx
    );
    let _ = writeln!(s, "- Load: `wrk -t1 -c C --latency` (`-H 'Connection: close'` for close); {}", r.settings);
    let _ = writeln!(s, "- Command: `{}`, took {:.0} s\n", r.command, r.elapsed.as_secs_f64());
    let nginx = r.rows.first();
    let header = |s: &mut String, last: &str| {
        let _ = write!(s, "| Server |");
        for sc in &r.scenarios {
            let _ = write!(s, " {} |", sc.label());
        }
        let _ = writeln!(s, "{last}\n|---|{}", "---|".repeat(r.scenarios.len() + usize::from(!last.is_empty())));
    };
    let _ = writeln!(s, "## Requests per second (ratio to nginx's median in the same bench)\n");
    header(&mut s, " peak RSS |");
    for row in &r.rows {
        let _ = write!(s, "| {} |", row.name);
        for (i, cell) in row.cells.iter().enumerate() {
            let rates: Vec<f64> = cell.runs.iter().map(|run| run.wrk.rate).collect();
            figure(&mut s, cell.rate(), nginx.and_then(|n| n.cells[i].rate()), &rates, "");
        }
        let _ = writeln!(s, " {} |", mib(row.rss_kib));
    }
    let _ = writeln!(s, "\n## Requests per server CPU-second (ratio to nginx's median; the server's median CPU use)\n");
    header(&mut s, "");
    for row in &r.rows {
        let _ = write!(s, "| {} |", row.name);
        for (i, cell) in row.cells.iter().enumerate() {
            let busy = cell.busy().map(|b| format!(" at {:.0}%", b * 100.0)).unwrap_or_default();
            figure(&mut s, cell.efficiency(), nginx.and_then(|n| n.cells[i].efficiency()), &cell.per_cpu(), &busy);
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "\n## p99 latency (median of runs) / errors (socket errors + non-2xx, summed over runs)\n");
    header(&mut s, "");
    for row in &r.rows {
        let _ = write!(s, "| {} |", row.name);
        for cell in &row.cells {
            if cell.runs.is_empty() {
                let _ = write!(s, " — |");
                continue;
            }
            let p99 = median(&cell.runs.iter().map(|run| run.wrk.p99_ms).collect::<Vec<_>>());
            let errors: u64 = cell.runs.iter().map(|run| run.wrk.errors()).sum();
            let _ = write!(s, " {p99:.2} ms / {errors} |");
        }
        let _ = writeln!(s);
    }
    if !r.idle.is_empty() {
        let _ = writeln!(s, "\n## Idle keep-alive connections (one 1 KiB request each, then held)\n");
        let _ = writeln!(
            s,
            "| Server | held | failed | RSS before | RSS holding them | per connection |\n|---|---|---|---|---|---|"
        );
        for (name, outcome) in &r.idle {
            match outcome {
                Ok((idle, before, after)) => {
                    let per = (*after as f64 - *before as f64) * 1024.0 / idle.held.max(1) as f64;
                    let failed = match &idle.first_error {
                        Some(e) => format!("{} ({})", idle.failed, e.replace('|', "/")),
                        None => idle.failed.to_string(),
                    };
                    let _ = writeln!(
                        s,
                        "| {name} | {} | {failed} | {} | {} | {:.2} KiB |",
                        idle.held,
                        mib(*before),
                        mib(*after),
                        per / 1024.0
                    );
                }
                Err(e) => {
                    let _ = writeln!(s, "| {name} | did not start: {} | | | | |", e.replace('|', "/"));
                }
            }
        }
    }
    let problems: Vec<String> =
        r.rows.iter().flat_map(|row| row.problems.iter().map(move |p| format!("- {}: {}", row.name, p))).collect();
    if !problems.is_empty() {
        let _ = writeln!(s, "\n## Problems\n\n{}", problems.join("\n"));
    }
    let _ = writeln!(
        s,
        "\nRSS sums VmRSS over the server's process tree (nginx: master + worker), sampled every 50 ms. \
         Server CPU is user + system time of the same tree from /proc/PID/stat, read before and after each \
         run; a server near 100% ran out of CPU, one well below it was held back by the load generator \
         (wrk has the other CPU to itself), and then requests per CPU-second compare the servers better \
         than requests per second. Ratios compare medians; on this shared VM single runs can drop to ~40 % (anchors §4.4), so \
         use `--runs 3` or more before trusting a ratio."
    );
    s
}

/// One table cell: the median `value`, its ratio to nginx's `base`, the min–max of `all` (with
/// three or more runs) and a `suffix`; a dash without a value.
fn figure(s: &mut String, value: Option<f64>, base: Option<f64>, all: &[f64], suffix: &str) {
    let Some(value) = value else {
        let _ = write!(s, " — |");
        return;
    };
    let _ = write!(s, " {}", short(value));
    if let Some(base) = base.filter(|b| *b > 0.0) {
        let _ = write!(s, " ({:.2}×)", value / base);
    }
    if all.len() >= 3 {
        let (lo, hi) = all.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let _ = write!(s, " [{}–{}]", short(lo), short(hi));
    }
    let _ = write!(s, "{suffix} |");
}

/// Ratio to nginx per scenario, one bar per warren model, with the parity line at 1.0; nginx's
/// own rate under each scenario's label.
pub fn chart(r: &Report) -> BarChart {
    let nginx = r.rows.first();
    let models = &r.rows[1.min(r.rows.len())..];
    let groups = r
        .scenarios
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            let base = nginx.and_then(|n| n.cells[i].rate()).filter(|b| *b > 0.0);
            let label = format!("{} nginx {}/s", sc.label(), base.map(short).unwrap_or_else(|| "—".into()));
            (label, models.iter().map(|m| Some(m.cells[i].rate()? / base?)).collect())
        })
        .collect();
    chart_of(models.iter().map(|m| m.name.clone()).collect(), groups)
}

/// The chart of `series` (warren's models) over `groups` (a label and each model's ratio to
/// nginx): from a run, or from a recorded table (`warren bench chart`).
pub fn chart_of(series: Vec<String>, groups: Vec<(String, Vec<Option<f64>>)>) -> BarChart {
    BarChart {
        title: "warren HTTP: requests per second as a ratio to nginx".into(),
        unit: "ratio to nginx".into(),
        series,
        groups,
        reference: Some((1.0, "nginx = 1.0×".into())),
        format: Format::Ratio,
        note: "medians over runs; nginx's own rate under each label".into(),
    }
}
