//! Progress for long work: a bar or a spinner on stderr when stderr is a terminal, nothing when
//! it is not (a pipe, a file, a test), so logs and captured output stay free of escape codes.
//! The one place that decides; `warren files`, `warren agents` and every bench draw through it.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

pub use indicatif::ProgressBar;
use indicatif::{ProgressDrawTarget, ProgressStyle};

/// Whether progress is drawn at all: only on a terminal.
pub fn visible() -> bool {
    std::io::stderr().is_terminal()
}

fn new(len: Option<u64>) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let bar = match len {
        Some(len) => ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()),
        None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
    };
    // Redrawn on a timer as well, so that a spinner turns while the work blocks.
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// A bar for `total` bytes, with the rate and the time left.
pub fn bytes(total: u64, what: &str) -> ProgressBar {
    let bar = new(Some(total));
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec}, {eta} left")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A bar for `total` steps (runs, seconds), with the time left.
pub fn steps(total: u64, what: &str) -> ProgressBar {
    let bar = new(Some(total));
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}, {eta} left")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// A spinner with `what` and the time since it started, for work whose length is unknown.
pub fn spinner(what: &str) -> ProgressBar {
    let bar = new(None);
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
    bar.set_message(what.to_owned());
    bar
}

/// The spinner of the bench that runs in this process, started by its first line.
static BENCH: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// A bench's progress line: printed on stderr as before, and on a terminal also shown as the
/// message of a spinner that keeps turning (with the time spent in this phase) until the next.
pub fn bench_line(line: &str) {
    let mut bench = BENCH.lock().unwrap_or_else(|e| e.into_inner());
    match bench.as_ref() {
        Some(bar) if !bar.is_hidden() => {
            bar.println(line);
            bar.set_message(line.to_owned());
            bar.reset_elapsed();
        }
        Some(_) => eprintln!("{line}"),
        None => {
            let bar = spinner(line);
            if bar.is_hidden() {
                eprintln!("{line}");
            } else {
                bar.println(line);
            }
            *bench = Some(bar);
        }
    }
}

/// Clears the bench's spinner, before its table is printed.
pub fn bench_done() {
    if let Some(bar) = BENCH.lock().unwrap_or_else(|e| e.into_inner()).take() {
        bar.finish_and_clear();
    }
}
