//! The soak's samples, the rows printed as it goes, and the Markdown summary at the end.

use std::fmt::Write as _;
use std::time::Duration;

use super::SoakArgs;
use super::clients::{Kind, Tally};
use super::verdict::{Bound, Windows};
use crate::chart::BarChart;
use crate::host::Machine;
use crate::probe;

/// RSS is flat within 10 % or 2 MiB, whichever is more.
const RSS_BOUND: Bound = Bound { relative: 0.10, absolute: 2048.0 };
/// Descriptors are flat within ±8: each held client connection is one.
const FD_BOUND: Bound = Bound { relative: 0.0, absolute: 8.0 };
/// Threads are flat within ±4 (the registry's runtime starts blocking threads on demand).
const THREAD_BOUND: Bound = Bound { relative: 0.0, absolute: 4.0 };

/// One look at the node and the clients.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub at: Duration,
    /// Summed VmRSS of the node and every descendant (exec children included).
    pub tree_rss_kib: u64,
    pub node_rss_kib: u64,
    /// Entries of /proc/PID/fd of the node.
    pub fds: u64,
    pub threads: u64,
    pub processes: u64,
    /// Units done and errors so far, all kinds together.
    pub done: u64,
    pub errors: u64,
}

impl Sample {
    pub const HEADER: &'static str = "    time  tree RSS  node RSS  fds  threads  procs     done/s  errors";

    pub fn take(pid: i32, at: Duration, tallies: &[Tally]) -> Sample {
        let tree = probe::snapshot(pid);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |key| probe::status_field(&status, key).and_then(|v| v.parse().ok()).unwrap_or(0);
        Sample {
            at,
            tree_rss_kib: tree.rss_kib,
            node_rss_kib: field("VmRSS"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64),
            threads: field("Threads"),
            processes: tree.processes,
            done: tallies.iter().map(Tally::done).sum(),
            errors: tallies.iter().map(Tally::errors).sum(),
        }
    }

    /// The printed row, with the rate since `previous`.
    pub fn row(&self, previous: Option<&Sample>) -> String {
        let rate = previous.map_or(0.0, |p| {
            let secs = (self.at - p.at).as_secs_f64();
            if secs > 0.0 { (self.done - p.done) as f64 / secs } else { 0.0 }
        });
        format!(
            "{:>7.0}s {:>6.1} MiB {:>5.1} MiB {:>4} {:>8} {:>6} {:>10.0} {:>7}",
            self.at.as_secs_f64(),
            mib(self.tree_rss_kib as f64),
            mib(self.node_rss_kib as f64),
            self.fds,
            self.threads,
            self.processes,
            rate,
            self.errors
        )
    }
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

/// The node's memory over the soak: the tree's RSS at up to twenty samples spread evenly over
/// the run, so that flat reads as flat.
pub fn chart(samples: &[Sample]) -> BarChart {
    let step = samples.len().div_ceil(20).max(1);
    let picked =
        samples.iter().step_by(step).chain(samples.last().filter(|_| !(samples.len() - 1).is_multiple_of(step)));
    BarChart {
        title: "warren up under mixed clients: memory over time".into(),
        unit: "MiB".into(),
        series: vec!["RSS of the node and its children".into()],
        groups: picked
            .map(|s| (format!("{:.0}s", s.at.as_secs_f64()), vec![Some(mib(s.tree_rss_kib as f64))]))
            .collect(),
        note: "a sample every --interval; at most twenty shown".into(),
        ..BarChart::default()
    }
}

/// Everything the summary is made of.
pub struct Summary<'a> {
    pub args: &'a SoakArgs,
    pub network: String,
    pub samples: &'a [Sample],
    pub after: &'a Sample,
    pub tallies: &'a [Tally],
    pub stopped_cleanly: bool,
}

/// A measured series: its name, how a value prints, its bound and its values.
struct Series {
    name: &'static str,
    show: fn(f64) -> String,
    bound: Bound,
    bound_text: &'static str,
    value: fn(&Sample) -> f64,
}

const SERIES: [Series; 4] = [
    Series {
        name: "RSS, node and children",
        show: show_mib,
        bound: RSS_BOUND,
        bound_text: "10 % or 2 MiB",
        value: |s| s.tree_rss_kib as f64,
    },
    Series {
        name: "RSS, node",
        show: show_mib,
        bound: RSS_BOUND,
        bound_text: "10 % or 2 MiB",
        value: |s| s.node_rss_kib as f64,
    },
    Series { name: "descriptors, node", show: show_count, bound: FD_BOUND, bound_text: "±8", value: |s| s.fds as f64 },
    Series {
        name: "threads, node",
        show: show_count,
        bound: THREAD_BOUND,
        bound_text: "±4",
        value: |s| s.threads as f64,
    },
];

fn show_mib(kib: f64) -> String {
    format!("{:.1} MiB", mib(kib))
}

fn show_count(n: f64) -> String {
    if n.fract() == 0.0 { format!("{n:.0}") } else { format!("{n:.1}") }
}

impl Summary<'_> {
    pub fn markdown(&self, machine: &Machine) -> String {
        let args = self.args;
        let human = |d: Duration| humantime::format_duration(d).to_string();
        let mut out = format!(
            "# warren bench soak\n\n\
             `warren up` (8 services: http, echo, chat, daytime, time, chargen, an exec of /bin/echo, the registry \
             with its DNS and HTTP API) under {} of mixed clients ({} threads), in {}; a sample every {}. \
             Windows: the first {} after a {} warm-up against the last {}.\n\n\
             Machine: {} × {}, Linux {}.\n\n",
            human(args.duration),
            Kind::ALL.iter().map(|k| k.workers()).sum::<usize>(),
            self.network,
            human(args.interval),
            human(args.window),
            human(args.warmup),
            human(args.window),
            machine.cpus,
            machine.cpu_model,
            machine.kernel,
        );
        out += "| measure | first sample | last sample | max | first window (mean) | last window (mean) | bound | verdict |\n\
                |---|---:|---:|---:|---:|---:|---|---|\n";
        let windows = Windows { warmup: args.warmup, window: args.window };
        for series in &SERIES {
            let points: Vec<(Duration, f64)> = self.samples.iter().map(|s| (s.at, (series.value)(s))).collect();
            let verdict = windows.judge(&points, series.bound);
            let show = |v: Option<f64>| v.map_or("–".to_string(), series.show);
            let max = points.iter().map(|p| p.1).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                series.name,
                show(points.first().map(|p| p.1)),
                show(points.last().map(|p| p.1)),
                show(max),
                show(verdict.first),
                show(verdict.last),
                series.bound_text,
                verdict.trend.word()
            );
        }
        let _ = writeln!(
            out,
            "\nAfter the clients stopped: {} node RSS, {} descriptors, {} threads, {} processes. \
             The node {} SIGTERM.\n",
            show_mib(self.after.node_rss_kib as f64),
            self.after.fds,
            self.after.threads,
            self.after.processes,
            if self.stopped_cleanly { "drained and exited on" } else { "had to be killed after" }
        );
        self.clients_table(&mut out);
        self.samples_table(&mut out);
        out
    }

    fn clients_table(&self, out: &mut String) {
        let secs = self.samples.last().map_or(0.0, |s| s.at.as_secs_f64()).max(1.0);
        *out += "| client | threads | what counts | done | per second | errors | last error |\n\
                 |---|---:|---|---:|---:|---:|---|\n";
        for (kind, tally) in Kind::ALL.iter().zip(self.tallies) {
            let last = tally.last_error.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} | {} | {} |",
                kind.name(),
                kind.workers(),
                kind.unit(),
                tally.done(),
                tally.done() as f64 / secs,
                tally.errors(),
                last.map_or("–".into(), |e| e.replace('|', "\\|"))
            );
        }
    }

    fn samples_table(&self, out: &mut String) {
        *out += "\n<details><summary>Every sample</summary>\n\n\
                 | time | RSS, tree | RSS, node | fds | threads | processes | done | errors |\n\
                 |---:|---:|---:|---:|---:|---:|---:|---:|\n";
        for s in self.samples {
            let _ = writeln!(
                out,
                "| {:.0} s | {} | {} | {} | {} | {} | {} | {} |",
                s.at.as_secs_f64(),
                show_mib(s.tree_rss_kib as f64),
                show_mib(s.node_rss_kib as f64),
                s.fds,
                s.threads,
                s.processes,
                s.done,
                s.errors
            );
        }
        *out += "\n</details>\n";
    }
}
