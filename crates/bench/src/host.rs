//! The machine the numbers came from, and the two things the bench changes about its own
//! process: CPU pinning and the file-descriptor limit.

use nix::libc;
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// The CPU the load generator runs on; the server gets [`SERVER_CPU`]. On a 2-core box this
/// splits the cores evenly, so the client cannot steal the server's cycles (anchors §4.3).
pub const LOAD_CPU: usize = 0;
/// The CPU every server child runs on (its own children inherit the mask).
pub const SERVER_CPU: usize = 1;

/// What the header says about the machine.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub kernel: String,
    pub memory_gib: f64,
    pub nofile: u64,
}

impl Machine {
    /// Read from /proc; unknown fields stay empty rather than failing the bench.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name").and_then(|rest| rest.split_once(':')).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_owned();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = crate::probe::status_field(&meminfo, "MemTotal").and_then(|v| v.parse().ok()).unwrap_or(0.0);
        let nofile = getrlimit(Resource::RLIMIT_NOFILE).map(|(soft, _)| soft).unwrap_or(0);
        Machine { cpus, cpu_model, kernel, memory_gib: mem_kib / (1024.0 * 1024.0), nofile }
    }
}

/// Per-CPU (busy, total) jiffies from the text of /proc/stat; idle and iowait count as not busy.
pub fn cpu_times(stat: &str) -> Vec<(u64, u64)> {
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
            let total: u64 = v.iter().take(8).sum();
            let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            (total - idle.min(total), total)
        })
        .collect()
}

/// How busy each CPU is over `window`, in percent: what else runs on this shared machine,
/// measured before the bench adds its own load, so the reader can judge the numbers.
pub fn background_load(window: std::time::Duration) -> Vec<f64> {
    let read = || cpu_times(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
    let before = read();
    std::thread::sleep(window);
    let after = read();
    before
        .iter()
        .zip(&after)
        .map(|(&(b0, t0), &(b1, t1))| if t1 > t0 { 100.0 * (b1 - b0) as f64 / (t1 - t0) as f64 } else { 0.0 })
        .collect()
}

/// Raise the soft descriptor limit to the hard one: 10,000 idle connections need 10,000
/// descriptors on each side, and the server children inherit the raised limit.
pub fn raise_nofile() -> nix::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// A set of CPUs, built before a fork so that applying it in the child is one system call.
#[derive(Clone, Copy)]
pub struct CpuSet(libc::cpu_set_t);

impl std::fmt::Debug for CpuSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: every index passed is below CPU_SETSIZE, inside the set.
        let cpus: Vec<usize> =
            (0..libc::CPU_SETSIZE as usize).filter(|&c| unsafe { libc::CPU_ISSET(c, &self.0) }).collect();
        f.debug_tuple("CpuSet").field(&cpus).finish()
    }
}

impl CpuSet {
    /// Just `cpu`.
    pub fn only(cpu: usize) -> std::io::Result<CpuSet> {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit lies inside `set`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        Ok(CpuSet(set))
    }

    /// The CPUs the calling thread may use now.
    pub fn current() -> std::io::Result<CpuSet> {
        // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: pid 0 is the calling thread; `set` is a writable cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if rc == 0 { Ok(CpuSet(set)) } else { Err(std::io::Error::last_os_error()) }
    }

    /// Restrict the calling thread (and every thread or process it starts later) to this set.
    ///
    /// Async-signal-safe (one system call, no allocation), so it may run between fork and exec.
    pub fn apply(&self) -> std::io::Result<()> {
        // SAFETY: pid 0 is the calling thread; `self.0` is a valid cpu_set_t of the size passed.
        let rc = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if rc == 0 { Ok(()) } else { Err(std::io::Error::last_os_error()) }
    }
}

/// The masks server children get.
#[derive(Clone, Copy, Debug)]
pub struct ServerCpus {
    /// The server CPU.
    pinned: CpuSet,
    /// What this process had before pinning, for servers that must not be pinned.
    all: CpuSet,
}

/// Whether pinning was asked for, and what happened.
#[derive(Clone, Debug)]
pub enum Pinning {
    /// `--no-pin`.
    Off,
    /// Pinned. `server` is the last pinned server child's Cpus_allowed_list as the kernel
    /// reports it.
    Applied { server: Option<String>, cpus: Box<ServerCpus> },
    /// Asked for but impossible (one CPU, or the affinity call failed).
    Failed(String),
}

impl Pinning {
    /// Pin this process to the load CPU, if asked and if there is a second CPU for servers.
    pub fn apply(wanted: bool, cpus: usize) -> Pinning {
        if !wanted {
            return Pinning::Off;
        }
        if cpus <= SERVER_CPU {
            return Pinning::Failed(format!("{cpus} CPU(s): nothing to split"));
        }
        let sets =
            (|| Ok::<_, std::io::Error>((CpuSet::current()?, CpuSet::only(LOAD_CPU)?, CpuSet::only(SERVER_CPU)?)))();
        match sets.and_then(|(all, load, pinned)| load.apply().map(|()| (all, pinned))) {
            Ok((all, pinned)) => Pinning::Applied { server: None, cpus: Box::new(ServerCpus { pinned, all }) },
            Err(e) => Pinning::Failed(format!("sched_setaffinity: {e}")),
        }
    }

    /// The CPUs a server child should get: the server CPU, or with `unpinned` every CPU this
    /// process started with (a child would otherwise inherit the load generator's CPU).
    /// `None` when nothing was pinned, so children inherit the unchanged mask.
    pub fn server_cpus(&self, unpinned: bool) -> Option<CpuSet> {
        match self {
            Pinning::Applied { cpus, .. } => Some(if unpinned { cpus.all } else { cpus.pinned }),
            _ => None,
        }
    }

    /// Record what the kernel says a server child may run on.
    pub fn observed(&mut self, cpus: Option<String>) {
        if let Pinning::Applied { server, .. } = self
            && cpus.is_some()
        {
            *server = cpus;
        }
    }

    /// One line for the report header.
    pub fn describe(&self) -> String {
        match self {
            Pinning::Off => "off (--no-pin): load generator and servers share every CPU".into(),
            Pinning::Applied { server, .. } => {
                let me = crate::probe::cpus_allowed(std::process::id() as i32).unwrap_or_else(|| "?".into());
                let server = server.clone().unwrap_or_else(|| "?".into());
                format!("applied: servers on CPU {server}, load generator on CPU {me} (as /proc reports them)")
            }
            Pinning::Failed(why) => format!("not applied ({why}): load generator and servers share the CPUs"),
        }
    }
}

/// Makes sure `programs` are on the machine, installing `packages` with apt-get (as root) if
/// any is missing; the programs' paths, or an error that says what to install by hand.
pub fn ensure_programs<const N: usize>(
    programs: [&str; N],
    packages: &[&str],
    bench: &str,
) -> anyhow::Result<[std::path::PathBuf; N]> {
    let found = || programs.map(crate::nginx::find_program);
    if found().iter().any(Option::is_none) {
        eprintln!("bench: installing {} with apt-get", packages.join(" "));
        // The package lists of a fresh machine may be empty: update only when the install fails.
        if !apt_get(&["install", "-y", "-q"], packages) {
            apt_get(&["update", "-q"], &[]);
            apt_get(&["install", "-y", "-q"], packages);
        }
    }
    let paths = found();
    if paths.iter().any(Option::is_none) {
        anyhow::bail!(
            "warren bench {bench} needs {}: `apt-get install {}` as root",
            programs.join(", "),
            packages.join(" ")
        );
    }
    Ok(paths.map(|p| p.expect("checked above")))
}

/// Runs `apt-get <args> <packages>` without questions; whether it succeeded.
fn apt_get(args: &[&str], packages: &[&str]) -> bool {
    use std::process::{Command, Stdio};
    Command::new("apt-get")
        .args(args)
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_reads_something() {
        let m = Machine::read();
        assert!(m.cpus >= 1 && !m.kernel.is_empty() && m.memory_gib > 0.0, "{m:?}");
    }

    #[test]
    fn off_and_impossible_pinning_say_so() {
        assert!(Pinning::apply(false, 2).describe().starts_with("off"));
        let one = Pinning::apply(true, 1);
        assert!(one.server_cpus(false).is_none() && one.describe().starts_with("not applied"));
    }

    #[test]
    fn cpu_times_per_cpu() {
        let stat = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 1 1 1 90 7 0 0 0 0 0\nintr 1 2\n";
        assert_eq!(cpu_times(stat), vec![(10, 50), (3, 100)]);
        let live = background_load(std::time::Duration::from_millis(50));
        assert!(!live.is_empty() && live.iter().all(|p| (0.0..=100.0).contains(p)), "{live:?}");
    }

    #[test]
    fn cpu_sets() {
        assert_eq!(format!("{:?}", CpuSet::only(1).unwrap()), "CpuSet([1])");
        assert!(CpuSet::only(usize::MAX).is_err());
        assert!(!format!("{:?}", CpuSet::current().unwrap()).contains("[]"));
    }
}
