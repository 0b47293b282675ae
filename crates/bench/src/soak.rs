//! `warren bench soak`: mixed clients against one `warren up` for a long while (10 minutes by
//! default), sampling the node's memory, descriptors and threads, to show that they stay flat.
//!
//! The node runs on a config of the bench's own in a scratch directory (every service on
//! 127.0.0.1 port 0, no status socket, its registry store and XDG directories in the scratch
//! directory), in a network namespace of the bench's own when it may make one (as root). Every
//! client kind ([`clients::Kind`]) loops until the end and stops by itself; every `--interval`
//! a row is printed; at the end a Markdown summary compares the first window after the warm-up
//! with the last window and calls each series flat or not ([`verdict`]).

mod clients;
mod node;
mod summary;
mod verdict;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;

use self::clients::{Kind, Tally};
use self::node::Node;
use self::summary::{Sample, Summary};

/// Options of `warren bench soak`.
#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the clients run.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    pub duration: Duration,
    /// Time between two samples (and two printed rows).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub interval: Duration,
    /// Time left out before the first window: caches, pools and allocator arenas fill up.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub warmup: Duration,
    /// Length of the first window (right after the warm-up) and of the last, whose means are
    /// compared.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1m")]
    pub window: Duration,
    /// Pause of each client between two exchanges (DNS keeps under 10 queries/s whatever this
    /// says).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20ms")]
    pub pause: Duration,
    /// Stay in the host's network namespace (loopback, ports picked by the kernel) instead of
    /// making one of the bench's own.
    #[arg(long)]
    pub no_netns: bool,
    /// Where soak.md goes.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
}

/// `warren bench soak`.
pub fn soak(args: &SoakArgs) -> anyhow::Result<()> {
    if args.interval.is_zero() || args.duration < args.interval {
        bail!("--interval must be above zero and at most --duration");
    }
    // First, while this process has a single thread: every thread made later inherits it.
    let network = if args.no_netns {
        "the host's loopback (--no-netns)".to_string()
    } else {
        match warren_testkit::netns::isolate_thread() {
            Ok(()) => "a network namespace of its own (loopback only)".to_string(),
            Err(e) => {
                eprintln!("bench soak: staying on the host's loopback: {e:#}");
                format!("the host's loopback ({e:#})")
            }
        }
    };
    let scratch = node::scratch()?;
    let mut node = Node::start(&crate::warren_exe()?, &scratch.dir)?;
    eprintln!(
        "bench soak: warren up (pid {}) ready; {} of mixed clients",
        node.pid,
        humantime::format_duration(args.duration)
    );
    // Seconds of the run; the rows go to stdout with the bar lifted for each.
    let bar = crate::progress::steps(args.duration.as_secs(), "bench soak: seconds");
    let tallies: Vec<Tally> = Kind::ALL.iter().map(|_| Tally::default()).collect();
    let start = Instant::now();
    let end = start + args.duration;
    let mut samples = Vec::new();
    std::thread::scope(|scope| {
        for (kind, tally) in Kind::ALL.iter().zip(&tallies) {
            for _ in 0..kind.workers() {
                let targets = &node.targets;
                scope.spawn(move || clients::run(*kind, targets, end, args.pause, tally));
            }
        }
        bar.suspend(|| println!("{}", Sample::HEADER));
        let mut next = start;
        loop {
            let sample = Sample::take(node.pid, start.elapsed(), &tallies);
            bar.suspend(|| println!("{}", sample.row(samples.last())));
            bar.set_position(sample.at.as_secs());
            samples.push(sample);
            if next >= end {
                break;
            }
            next = (next + args.interval).min(end);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        bar.finish_and_clear();
        eprintln!("bench soak: waiting for the clients to stop");
    });
    // Connections the clients held are closed now; what the node keeps after them.
    let after = Sample::take(node.pid, start.elapsed(), &tallies);
    let stopped = node.stop();
    let summary =
        Summary { args, network, samples: &samples, after: &after, tallies: &tallies, stopped_cleanly: stopped };
    let text = summary.markdown(&crate::host::Machine::read());
    println!();
    crate::results::write(&args.out, "soak", &text, &summary::chart(&samples))?;
    Ok(())
}
