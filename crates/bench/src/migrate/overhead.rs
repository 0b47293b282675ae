//! What safe points cost an agent that is not moving: the same two loops run plain, with the
//! flag check at their header, and with the check and Asyncify's transform (the code a node
//! runs for an agent that may move), in this process, interleaved. Times are the thread's CPU
//! time, so other work on the machine counts less than in wall time.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use nix::libc;
use warren_agents::{Ended, Freezer, Host, Job, Limits, ModuleId, Value};

use super::guests;

/// One loop's best times (CPU) of plain, flag-checked and Asyncified runs.
#[derive(Clone, Debug)]
pub struct Overhead {
    pub entry: &'static str,
    pub iterations: i64,
    pub plain: Duration,
    pub checked: Duration,
    pub mobile: Duration,
}

impl Overhead {
    /// Asyncified ÷ plain.
    pub fn ratio(&self) -> f64 {
        self.mobile.as_secs_f64() / self.plain.as_secs_f64().max(1e-9)
    }
}

/// This thread's CPU time so far, to the nanosecond (getrusage counts in scheduler ticks).
fn thread_cpu() -> anyhow::Result<Duration> {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid timespec for the call to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return Err(std::io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// The CPU time of `run` and what it returned.
fn timed(run: impl FnOnce() -> anyhow::Result<Vec<Value>>) -> anyhow::Result<(Duration, Vec<Value>)> {
    let started = thread_cpu()?;
    let results = run()?;
    Ok((thread_cpu()?.saturating_sub(started), results))
}

/// Both loops, `iterations` each, best of `runs` interleaved runs of the three variants.
pub fn measure(host: &Host, iterations: i64, runs: usize) -> anyhow::Result<Vec<Overhead>> {
    let plain = host.load(&wat::parse_str(guests::loops(false))?, None)?;
    let safe = wat::parse_str(guests::loops(true))?;
    let checked = host.load(&safe, None)?;
    let mobile = host.prepare(&safe, None).context("preparing the loops for mobility")?.module;
    let mut rows = Vec::new();
    for entry in ["sum", "mix"] {
        // The host's most fuel: a billion (the default) lasts fewer than 100 million iterations.
        let limits = Limits { fuel: host.config().ceiling.fuel, ..Limits::default() };
        let job = |module: ModuleId| Job { args: vec![Value::I64(iterations)], limits, ..Job::new(module, entry) };
        let mut best = [Duration::MAX; 3];
        for _ in 0..runs {
            let (t, expected) = timed(|| Ok(host.run(&job(plain))?.results))?;
            best[0] = best[0].min(t);
            let (t, results) = timed(|| Ok(host.run(&job(checked))?.results))?;
            ensure!(results == expected, "{entry} with its flag check ended otherwise than without");
            best[1] = best[1].min(t);
            let (t, results) = timed(|| match host.run_mobile(&job(mobile), &Freezer::new())? {
                Ended::Finished(outcome) => Ok(outcome.results),
                Ended::Frozen(_) => bail!("{entry} froze with nobody asking"),
            })?;
            ensure!(results == expected, "{entry} Asyncified ended otherwise than plain");
            best[2] = best[2].min(t);
        }
        rows.push(Overhead { entry, iterations, plain: best[0], checked: best[1], mobile: best[2] });
    }
    Ok(rows)
}
