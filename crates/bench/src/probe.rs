//! What a server costs: threads, processes and resident memory of its whole process tree, read
//! from /proc. The tree matters because `fork` and `prefork` spread a server over many
//! processes (and a hub process); the root's own numbers would hide exactly what the chapter's
//! table is about.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the sampler looks: often enough to catch a short-lived peak of forked children,
/// rare enough to cost the load generator's core little.
const PERIOD: Duration = Duration::from_millis(50);

/// One look at a process tree (or the peak of several looks, field by field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub processes: u64,
    pub threads: u64,
    /// Summed VmRSS. Pages shared after a fork count once per process, as `ps` would count them.
    pub rss_kib: u64,
    /// Summed proportional set size (each shared page split among its sharers): what the tree
    /// really holds. Costly to read (the kernel walks every page table), so only measured where
    /// asked for with [`tree_pss_kib`].
    pub pss_kib: Option<u64>,
}

impl Usage {
    /// The larger of each field.
    pub fn max(self, other: Usage) -> Usage {
        Usage {
            processes: self.processes.max(other.processes),
            threads: self.threads.max(other.threads),
            rss_kib: self.rss_kib.max(other.rss_kib),
            pss_kib: self.pss_kib.max(other.pss_kib),
        }
    }

    /// Resident memory in MiB, for the table.
    pub fn rss_mib(self) -> f64 {
        self.rss_kib as f64 / 1024.0
    }
}

/// The state letter and parent pid from the text of /proc/PID/stat.
pub fn parse_stat(text: &str) -> Option<(char, i32)> {
    let mut fields = stat_fields(text)?;
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// The fields of /proc/PID/stat after the command name, from the state (field 3) on.
fn stat_fields(text: &str) -> Option<std::str::SplitWhitespace<'_>> {
    // The command name sits in parentheses and may itself contain spaces and parentheses, so
    // the fields are counted from the last closing one.
    Some(text[text.rfind(')')? + 1..].split_whitespace())
}

/// User plus system time in clock ticks (fields 14 and 15) from the text of /proc/PID/stat: every
/// thread of the process, those that exited included.
pub fn parse_cpu_ticks(text: &str) -> Option<u64> {
    let mut fields = stat_fields(text)?.skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The CPU time `root`'s tree has used so far (user plus system, each process counted once),
/// in seconds. Take it before and after a run: the difference is what the run cost the server,
/// whichever CPU it ran on. Processes that exit between the two looks are not counted, so this
/// fits servers whose processes live through the run (nginx's master and worker, warren under
/// every model but `fork`).
pub fn cpu_seconds(root: i32) -> f64 {
    let ticks: u64 = tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|text| parse_cpu_ticks(&text))
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

/// CPU time, user and system, that the live threads of `root`'s tree have run so far, in
/// nanoseconds from each thread's `/proc/PID/task/TID/schedstat`: where [`cpu_seconds`] counts
/// 10 ms clock ticks, this is exact enough to divide by a few dozen requests. Threads that have
/// exited are not counted, so it suits servers whose threads live as long as they do.
pub fn sched_cpu_seconds(root: i32) -> f64 {
    let nanos: u64 = tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    nanos as f64 / 1e9
}

/// CPU time, user and system, that the calling thread has run so far, in seconds, from its
/// `/proc/thread-self/schedstat` (nanoseconds): what a load generator on one thread spends.
pub fn thread_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0.0, |nanos| nanos as f64 / 1e9)
}

/// `sysconf(_SC_CLK_TCK)`, the unit of the times in /proc/PID/stat (100 on Linux).
fn clock_ticks_per_second() -> f64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(hz)) if hz > 0 => hz as f64,
        _ => 100.0,
    }
}

/// A `Key:  value` field of /proc/PID/status, without units.
pub fn status_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == key).then(|| v.trim().trim_end_matches(" kB"))
    })
}

/// Context switches, voluntary and not, that every thread of `root`'s tree has made so far. Like
/// [`cpu_seconds`], read it before and after a run; threads that exit between the two looks are
/// not counted.
pub fn context_switches(root: i32) -> u64 {
    tree(root)
        .into_iter()
        .filter_map(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .flat_map(|tasks| tasks.flatten())
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|text| parse_switches(&text))
        .sum()
}

/// Voluntary plus involuntary context switches from the text of /proc/PID/task/TID/status.
pub fn parse_switches(text: &str) -> u64 {
    let number = |key| status_field(text, key).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    number("voluntary_ctxt_switches") + number("nonvoluntary_ctxt_switches")
}

/// Threads and resident KiB of one process from its /proc/PID/status text. A zombie has no
/// VmRSS line; it still counts as a process holding a slot.
fn parse_status(text: &str) -> Usage {
    let number = |key| status_field(text, key).and_then(|v| v.parse().ok()).unwrap_or(0);
    Usage { processes: 1, threads: number("Threads"), rss_kib: number("VmRSS"), pss_kib: None }
}

/// The summed `Pss` of `root`'s tree from /proc/PID/smaps_rollup; `None` if some process's
/// could not be read (a process that exits between listing and reading is not counted).
pub fn tree_pss_kib(root: i32) -> Option<u64> {
    let mut total = 0;
    for pid in tree(root) {
        match std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) {
            Ok(text) => total += status_field(&text, "Pss")?.parse::<u64>().ok()?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(_) => return None,
        }
    }
    Some(total)
}

/// `root` and every descendant, found through each process's parent pid.
pub fn tree(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return vec![root] };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
        // A process may exit between listing and reading; it is simply not counted.
        if let Some((_, ppid)) =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().as_deref().and_then(parse_stat)
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        if let Some(kids) = children.get(&found[next]) {
            found.extend(kids);
        }
        next += 1;
    }
    found
}

/// The usage of `root`'s tree now; zero when it has gone.
pub fn snapshot(root: i32) -> Usage {
    let mut total = Usage::default();
    for pid in tree(root) {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let one = parse_status(&text);
            total.processes += one.processes;
            total.threads += one.threads;
            total.rss_kib += one.rss_kib;
        }
    }
    total
}

/// The CPUs a process may run on, as the kernel lists them (`1`, `0-1`); the proof that
/// pinning took effect.
pub fn cpus_allowed(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field(&text, "Cpus_allowed_list").map(str::to_owned)
}

/// Samples a process tree in the background and keeps the peak.
#[derive(Debug)]
pub struct Sampler {
    peak: Arc<Mutex<Usage>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sampler {
    /// Start sampling `root`'s tree every 50 ms.
    pub fn start(root: i32) -> std::io::Result<Sampler> {
        let (peak, stop) = (Arc::new(Mutex::new(snapshot(root))), Arc::new(AtomicBool::new(false)));
        let (p, s) = (peak.clone(), stop.clone());
        let thread = std::thread::Builder::new().name("bench-probe".into()).spawn(move || {
            while !s.load(Ordering::Relaxed) {
                std::thread::sleep(PERIOD);
                let now = snapshot(root);
                let mut peak = p.lock().unwrap_or_else(|e| e.into_inner());
                *peak = peak.max(now);
            }
        })?;
        Ok(Sampler { peak, stop, thread: Some(thread) })
    }

    /// The peak since the start or the previous call, including a look right now; resets it.
    pub fn take_peak(&self, root: i32) -> Usage {
        let now = snapshot(root);
        let mut peak = self.peak.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *peak).max(now)
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_awkward_command_names() {
        assert_eq!(parse_stat("42 (a) b) c) S 7 42 42 0 -1"), Some(('S', 7)));
        assert_eq!(parse_stat("1 (init) R 0 1"), Some(('R', 0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn cpu_ticks_are_user_plus_system() {
        let text = "42 (a) b) R 7 42 42 0 -1 4194304 100 0 0 0 250 31 0 0 20 0 3 0 1000";
        assert_eq!(parse_cpu_ticks(text), Some(281));
        assert_eq!(parse_cpu_ticks("1 (init) S 0"), None);
    }

    #[test]
    fn cpu_time_grows_with_work() {
        let me = std::process::id() as i32;
        let before = cpu_seconds(me);
        let start = std::time::Instant::now();
        // Spin until the kernel has charged at least two ticks (bounded by the clock).
        let mut x = 0u64;
        while cpu_seconds(me) - before < 0.02 && start.elapsed() < Duration::from_secs(10) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_seconds(me) - before >= 0.02, "{x}");
    }

    #[test]
    fn this_process_is_in_its_own_tree() {
        let me = std::process::id() as i32;
        let text = std::fs::read_to_string("/proc/self/stat").unwrap();
        let (state, ppid) = parse_stat(&text).unwrap();
        assert!("RS".contains(state), "{state}");
        assert_eq!(ppid, nix::unistd::getppid().as_raw());
        assert_eq!(tree(me)[0], me);
        assert!(tree(ppid).contains(&me));
    }

    #[test]
    fn this_process_uses_threads_and_memory() {
        let usage = snapshot(std::process::id() as i32);
        assert!(usage.processes >= 1 && usage.threads >= 1 && usage.rss_kib > 0, "{usage:?}");
        assert!(cpus_allowed(std::process::id() as i32).is_some());
    }

    #[test]
    fn status_fields_lose_their_units() {
        let text = "Name:\tx\nThreads:\t3\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_status(text), Usage { processes: 1, threads: 3, rss_kib: 2048, pss_kib: None });
        assert_eq!(parse_status("Name:\tzombie\n"), Usage { processes: 1, threads: 0, rss_kib: 0, pss_kib: None });
    }

    #[test]
    fn context_switches_of_every_thread() {
        let text = "Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_switches(text), 123);
        assert_eq!(parse_switches("Name:\tx\n"), 0);
        let me = std::process::id() as i32;
        let before = context_switches(me);
        std::thread::spawn(|| std::thread::sleep(Duration::from_millis(5))).join().unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(context_switches(me) > before);
    }

    #[test]
    fn sampler_keeps_the_peak() {
        let me = std::process::id() as i32;
        let sampler = Sampler::start(me).unwrap();
        std::thread::sleep(PERIOD * 2);
        assert!(sampler.take_peak(me).threads >= 2, "the sampler's own thread counts");
    }

    #[test]
    fn a_trees_pss_is_at_most_its_rss() {
        let me = std::process::id() as i32;
        let pss = tree_pss_kib(me).expect("this process's smaps_rollup is readable");
        assert!(pss > 0 && pss <= snapshot(me).rss_kib + 4, "pss {pss} KiB");
    }
}
