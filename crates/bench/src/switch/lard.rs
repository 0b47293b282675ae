//! The lard part of `warren bench switch`: content-aware routing (LARD) against round-robin,
//! both through `warren switch --mode http`, on a working set larger than one backend's cache.
//!
//! Each backend is a `warren serve http` over its own copy of the documents, in a memory cgroup
//! ([`MemoryCgroup`]) whose limit bounds the page cache it can fill: a hit is served from
//! memory, a miss is read from the disk by the kernel, as in the LARD paper's cluster (main
//! memory caches, disk behind them). Round-robin sends every document to every backend, so each
//! cache holds only part of the working set; LARD sends each document to one backend, so the
//! caches together hold it. The hit ratio of each backend comes from its `/proc/PID/io`: bytes
//! it read (file bodies through `sendfile`, and request heads) against bytes the kernel read
//! from the disk for it.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail, ensure};
use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};

use super::memcg::MemoryCgroup;
use super::{Bench, SwitchArgs, write_problems};
use crate::report::{median, thousands};
use crate::scratch::Scratch;
use crate::server::Server;
use crate::wrk::{self, Script};

const POLICIES: [&str; 2] = ["round-robin", "lard"];
const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;
/// The most the part writes to disk: every backend's copy of the documents.
const MAX_DISK: u64 = 8 << 30;
/// wrk runs of one `--duration` a warm-up may take to make its passes over the documents.
const MAX_WARMUPS: usize = 10;

/// The part's sizes, from the command line.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    backends: usize,
    files: usize,
    file_bytes: u64,
    limit_bytes: u64,
    zipf: f64,
}

impl Sizes {
    fn new(args: &SwitchArgs) -> anyhow::Result<Sizes> {
        let sizes = Sizes {
            backends: args.lard_backends,
            files: args.lard_files,
            file_bytes: args.lard_file_kib * KIB,
            limit_bytes: args.lard_cache_mib * MIB,
            zipf: args.lard_zipf,
        };
        ensure!((2..=16).contains(&sizes.backends), "--lard-backends must be 2 to 16");
        ensure!((1..=100_000).contains(&sizes.files), "--lard-files must be 1 to 100000");
        ensure!((1..=1024).contains(&args.lard_file_kib), "--lard-file-kib must be 1 to 1024");
        ensure!((8..=4096).contains(&args.lard_cache_mib), "--lard-cache-mib must be 8 to 4096");
        ensure!((0.0..=3.0).contains(&sizes.zipf), "--lard-zipf must be 0 (uniform) to 3");
        ensure!(
            sizes.working_set() * sizes.backends as u64 <= MAX_DISK,
            "the backends' copies of the documents would take more than 8 GiB of disk"
        );
        Ok(sizes)
    }

    fn working_set(&self) -> u64 {
        self.files as u64 * self.file_bytes
    }

    /// Passes over the documents, in order, that fill every cache under either policy:
    /// round-robin gives each backend 1/N of each pass, and its cache holds `limit`.
    fn warm_passes(&self) -> u64 {
        (self.backends as u64 * self.limit_bytes).div_ceil(self.working_set()).max(1)
    }

    fn popularity(&self) -> String {
        if self.zipf == 0.0 {
            "URLs drawn uniformly from the working set".into()
        } else {
            format!("URLs drawn from the working set by a Zipf law of exponent {}", self.zipf)
        }
    }
}

/// A backend in its cgroup. Fields drop in order: the server stops before its cgroup goes.
struct CachedBackend {
    server: Server,
    cgroup: MemoryCgroup,
    root: PathBuf,
}

/// What one backend read over a measured run.
#[derive(Clone, Copy, Debug, Default)]
struct Served {
    /// Bytes it read: bodies by `sendfile` or `pread`, and the request heads (`rchar`).
    read: u64,
    /// Of those, bytes the kernel read from the disk for it (`read_bytes`).
    disk: u64,
    /// Page cache charged to its cgroup at the end.
    cached: u64,
}

/// One measured run of one policy.
#[derive(Clone, Debug, Default)]
struct Run {
    rate: f64,
    errors: u64,
    /// The warm-up made its passes over the documents within [`MAX_WARMUPS`] runs.
    warmed: bool,
    backends: Vec<Served>,
}

/// The runs of one policy.
#[derive(Clone, Debug, Default)]
struct Policy(Vec<Run>);

impl Policy {
    fn rates(&self) -> Vec<f64> {
        self.0.iter().map(|r| r.rate).collect()
    }

    fn median(&self) -> Option<f64> {
        (!self.0.is_empty()).then(|| median(&self.rates()))
    }

    fn errors(&self) -> u64 {
        self.0.iter().map(|r| r.errors).sum()
    }

    /// (bytes read, from disk) of backend `k` over every run; `None` for the whole cluster.
    fn bytes(&self, k: Option<usize>) -> (u64, u64) {
        let served = self.0.iter().flat_map(|r| r.backends.iter().enumerate());
        let mine = served.filter(|(i, _)| k.is_none_or(|k| k == *i));
        mine.fold((0, 0), |(read, disk), (_, s)| (read + s.read, disk + s.disk))
    }

    fn hit_ratio(&self, k: Option<usize>) -> Option<f64> {
        let (read, disk) = self.bytes(k);
        (read > 0).then(|| 1.0 - (disk.min(read) as f64 / read as f64))
    }

    fn share(&self, k: usize) -> Option<f64> {
        let (all, _) = self.bytes(None);
        (all > 0).then(|| self.bytes(Some(k)).0 as f64 / all as f64)
    }

    fn cached(&self, k: usize) -> Option<u64> {
        self.0.last().and_then(|r| r.backends.get(k)).map(|s| s.cached)
    }
}

impl Bench<'_> {
    /// The lard part: a section of the report, with what went wrong in it rather than an error,
    /// so that a machine without memory cgroups still gets the other parts.
    pub(super) fn lard(&self, md: &mut String) -> anyhow::Result<()> {
        self.progress("part: lard (content-aware) against round-robin");
        writeln!(md, "## lard: content-aware routing against round-robin\n")?;
        let measured = Sizes::new(self.args).and_then(|sizes| Ok((sizes, self.lard_runs(&sizes)?)));
        match measured {
            Ok((sizes, (policies, problems))) => {
                self.lard_report(md, &sizes, &policies)?;
                write_problems(md, &problems)
            }
            Err(e) => write_problems(md, &[format!("{e:#}")]),
        }
    }

    fn lard_runs(&self, sizes: &Sizes) -> anyhow::Result<([Policy; 2], Vec<String>)> {
        let scratch = Scratch::new("switch-lard", 0o755)?;
        refuse_memory_filesystem(&scratch.dir)?;
        self.progress(&format!(
            "lard: writing {} copies of {} files of {} KiB",
            sizes.backends,
            sizes.files,
            sizes.file_bytes / KIB
        ));
        let roots = write_documents(&scratch.dir, sizes)?;
        let script = scratch.dir.join("urls.lua");
        fs::write(&script, lua_script(sizes))?;

        let mut backends = Vec::new();
        for (k, root) in roots.into_iter().enumerate() {
            let cgroup = MemoryCgroup::create(&format!("lard-{}-{k}", std::process::id()), sizes.limit_bytes)?;
            let argv: Vec<String> = [
                "http",
                "--model",
                "event",
                "--root",
                &root.display().to_string(),
                "-d",
                "0",
                "--max-conns",
                "20000",
                "--listen",
                "127.0.0.1:0",
            ]
            .map(String::from)
            .into();
            let server = Server::start(&self.exe, &argv, None)?;
            cgroup.join(server.pid())?;
            backends.push(CachedBackend { server, cgroup, root });
        }
        let addrs: Vec<String> = backends.iter().map(|b| b.server.addr().to_string()).collect();
        let switches = match POLICIES.map(|policy| self.warren_switch("http", policy, &addrs)) {
            [Ok(rr), Ok(lard)] => [rr, lard],
            [rr, lard] => {
                let why: Vec<String> = [rr.err(), lard.err()].into_iter().flatten().map(|e| format!("{e:#}")).collect();
                bail!("warren switch did not start: {}", why.join("; "));
            }
        };

        let mut policies = [Policy::default(), Policy::default()];
        let mut problems = Vec::new();
        for run in 0..self.args.runs {
            for turn in 0..POLICIES.len() {
                // Rotated, so that neither policy always runs first.
                let p = (turn + run) % POLICIES.len();
                // The same URLs, in the same order, for both policies of a run.
                let seeds = [2 * run as u64 + 1, 2 * run as u64 + 2];
                match self.lard_run(&switches[p], &backends, &script, sizes, seeds) {
                    Ok(measured) => {
                        if !measured.warmed {
                            problems.push(format!(
                                "{} run {}: the warm-up did not pass over the documents {} times within {MAX_WARMUPS} runs of wrk",
                                POLICIES[p],
                                run + 1,
                                sizes.warm_passes()
                            ));
                        }
                        self.progress(&format!(
                            "lard run {}/{}: {} {:.0} req/s, {} errors",
                            run + 1,
                            self.args.runs,
                            POLICIES[p],
                            measured.rate,
                            measured.errors
                        ));
                        policies[p].0.push(measured);
                    }
                    Err(e) => problems.push(format!("{} run {}: {e:#}", POLICIES[p], run + 1)),
                }
            }
        }
        for (p, policy) in policies.iter().enumerate() {
            if policy.errors() > 0 {
                problems.push(format!("{}: {} failed requests", POLICIES[p], policy.errors()));
            }
        }
        drop(switches);
        drop(backends);
        Ok((policies, problems))
    }

    /// Empties every backend's cache and warms them up: passes over the documents in order
    /// until every cache is full (or [`MAX_WARMUPS`] runs), then one `--duration` of the drawn
    /// URLs. Then measures one `--duration` of drawn URLs.
    fn lard_run(
        &self,
        switch: &Server,
        backends: &[CachedBackend],
        script: &Path,
        sizes: &Sizes,
        seeds: [u64; 2],
    ) -> anyhow::Result<Run> {
        for b in backends {
            drop_cache(&b.root)?;
        }
        let url = format!("http://{}/", switch.addr());
        let wrk = |mode: &str, n: u64| {
            let args = [mode.to_owned(), n.to_string()];
            let script = Script { path: script, args: &args };
            let conns = self.args.connections;
            wrk::run_script(&self.wrk, self.load_cpu, &url, conns, self.args.duration, false, Some(script))
        };
        let (mut warmed, mut errors) = (0, 0);
        let passes = sizes.warm_passes() * sizes.files as u64;
        for _ in 0..MAX_WARMUPS {
            // Each run goes on from where the last one stopped.
            let w = wrk("cycle", warmed)?;
            (warmed, errors) = (warmed + w.requests, errors + w.errors());
            if warmed >= passes {
                break;
            }
        }
        let warm = wrk("draw", seeds[0])?;
        let before: Vec<(u64, u64)> = backends.iter().map(|b| io_counters(b.server.pid())).collect::<Result<_, _>>()?;
        let measured = wrk("draw", seeds[1])?;
        let mut served = Vec::new();
        for (b, (read, disk)) in backends.iter().zip(before) {
            let (read_after, disk_after) = io_counters(b.server.pid())?;
            served.push(Served {
                read: read_after.saturating_sub(read),
                disk: disk_after.saturating_sub(disk),
                cached: b.cgroup.cached().unwrap_or(0),
            });
        }
        let errors = errors + warm.errors() + measured.errors();
        Ok(Run { rate: measured.rate, errors, warmed: warmed >= passes, backends: served })
    }

    fn lard_report(&self, md: &mut String, sizes: &Sizes, policies: &[Policy; 2]) -> anyhow::Result<()> {
        let limit = sizes.limit_bytes / MIB;
        writeln!(
            md,
            "{} `warren serve http --model event` backends, each over its own copy of {} files of {} KiB \
             ({} MiB: the working set) and in a memory cgroup limited to {limit} MiB, which holds its page \
             cache and its own memory: one backend caches at most {:.0} % of the working set. {} (wrk, \
             {} connections, keep-alive, a Lua script), through `warren switch --mode http` with \
             `--policy round-robin` and `--policy lard` (LARD's default thresholds, 25 and 65 requests in \
             progress). Each run empties every backend's page cache (`POSIX_FADV_DONTNEED` on its \
             files), warms up by requesting every document in order {} times (so that every cache \
             is full, under either policy) and then for {} with the drawn URLs, and measures {}. Hit \
             ratio: of the bytes a backend read, the share not read from the disk (`/proc/PID/io`).\n",
            sizes.backends,
            thousands(sizes.files as f64),
            sizes.file_bytes / KIB,
            sizes.working_set() / MIB,
            (sizes.limit_bytes as f64 * 100.0 / sizes.working_set() as f64).min(100.0),
            sizes.popularity(),
            self.args.connections,
            sizes.warm_passes(),
            humantime::format_duration(self.args.duration),
            humantime::format_duration(self.args.duration),
        )?;
        writeln!(md, "| policy | requests/s | min–max | hit ratio | errors |")?;
        writeln!(md, "|---|---|---|---|---|")?;
        for (name, policy) in POLICIES.iter().zip(policies) {
            let rates = policy.rates();
            let range = if rates.is_empty() {
                "–".into()
            } else {
                let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
                let max = rates.iter().copied().fold(0.0, f64::max);
                format!("{}–{}", thousands(min), thousands(max))
            };
            writeln!(
                md,
                "| {name} | {} | {range} | {} | {} |",
                policy.median().map_or("–".into(), thousands),
                percent(policy.hit_ratio(None)),
                policy.errors()
            )?;
        }
        let [rr, lard] = policies;
        let per_run: Vec<String> = rr.0.iter().zip(&lard.0).map(|(a, b)| format!("{:.2}×", b.rate / a.rate)).collect();
        match (lard.median(), rr.median()) {
            (Some(l), Some(r)) if r > 0.0 => {
                let verdict = if l / r >= 2.0 { "met" } else { "not met" };
                writeln!(
                    md,
                    "\n**LARD ÷ round-robin: {:.2}×** (medians; per run: {}). Goal ≥ 2×: {verdict}.\n",
                    l / r,
                    per_run.join(", ")
                )?;
            }
            _ => writeln!(md, "\nLARD ÷ round-robin: – (a policy has no run).\n")?,
        }
        writeln!(
            md,
            "Per backend, over every run: its share of the bytes served, its hit ratio, and the page cache its cgroup held at the end of the last run.\n"
        )?;
        writeln!(
            md,
            "| backend | round-robin: share | hit ratio | cache held | lard: share | hit ratio | cache held |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|")?;
        for k in 0..sizes.backends {
            let cells: Vec<String> = policies
                .iter()
                .map(|p| {
                    let held = p.cached(k).map_or("–".into(), |c| format!("{:.1} MiB", c as f64 / MIB as f64));
                    format!("{} | {} | {held}", percent(p.share(k)), percent(p.hit_ratio(Some(k))))
                })
                .collect();
            writeln!(md, "| {} | {} |", k + 1, cells.join(" | "))?;
        }
        Ok(())
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.1} %", v * 100.0))
}

/// A tmpfs or ramfs file is memory itself: a miss would cost nothing, and the cgroup could not
/// drop it.
fn refuse_memory_filesystem(dir: &Path) -> anyhow::Result<()> {
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    /// linux/magic.h; nix names only tmpfs's.
    const RAMFS_MAGIC: u64 = 0x8584_58f6;
    let kind = statfs(dir).with_context(|| format!("cannot statfs {}", dir.display()))?.filesystem_type();
    if kind == TMPFS_MAGIC || kind.0 as u64 == RAMFS_MAGIC {
        bail!(
            "{} is on a memory file system, where a cache miss costs no disk read: set TMPDIR to a \
             directory on a disk",
            dir.display()
        );
    }
    Ok(())
}

/// Each backend's copy of the documents, `bK/lard/NNNNN.bin`, written through to the disk and
/// then dropped from the page cache.
fn write_documents(dir: &Path, sizes: &Sizes) -> anyhow::Result<Vec<PathBuf>> {
    let mut body = vec![0u8; sizes.file_bytes as usize];
    let mut rng = fastrand::Rng::with_seed(0x6c61_7264);
    rng.fill(&mut body);
    let mut roots = Vec::new();
    for k in 0..sizes.backends {
        let root = dir.join(format!("b{k}"));
        let docs = root.join("lard");
        fs::create_dir_all(&docs)?;
        for i in 0..sizes.files {
            // Every file its own bytes, so no layer below can share blocks between them.
            body[..8].copy_from_slice(&((k as u64) << 32 | i as u64).to_le_bytes());
            let path = docs.join(format!("{i:05}.bin"));
            File::create(&path)
                .and_then(|mut f| f.write_all(&body))
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        roots.push(root);
    }
    // Dirty pages cannot be dropped: write everything out once, then drop it.
    nix::unistd::syncfs(File::open(dir)?).context("syncfs")?;
    for root in &roots {
        drop_cache(root)?;
    }
    Ok(roots)
}

/// Drops the page cache of every document under `root`: the next read of each goes to the disk.
fn drop_cache(root: &Path) -> anyhow::Result<()> {
    for entry in fs::read_dir(root.join("lard"))? {
        let file = File::open(entry?.path())?;
        posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_DONTNEED).context("posix_fadvise")?;
    }
    Ok(())
}

/// `rchar` and `read_bytes` of process `pid`, all its threads.
fn io_counters(pid: i32) -> anyhow::Result<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/{pid}/io")).with_context(|| format!("/proc/{pid}/io"))?;
    let field = |key: &str| text.lines().find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok());
    match (field("rchar:"), field("read_bytes:")) {
        (Some(read), Some(disk)) => Ok((read, disk)),
        _ => bail!("/proc/{pid}/io has no rchar or read_bytes"),
    }
}

/// wrk's requests: `GET /lard/NNNNN.bin`. With `init`'s arguments `draw SEED`, each file drawn
/// uniformly or by a Zipf law (rank k with weight k^-s, from a cumulative table searched by
/// bisection); with `cycle START`, every file in order from START, round and round (the
/// warm-up).
fn lua_script(sizes: &Sizes) -> String {
    format!(
        r#"-- warren bench switch, lard part: the URLs of the working set.
local files = {files}
local s = {zipf}
local cdf = nil
local cycle = nil

init = function(args)
  if args[1] == "cycle" then
    cycle = tonumber(args[2]) % files
    return
  end
  math.randomseed(tonumber(args[2]))
  if s > 0 then
    cdf = {{}}
    local total = 0
    for k = 1, files do
      total = total + k ^ (-s)
      cdf[k] = total
    end
    for k = 1, files do cdf[k] = cdf[k] / total end
  end
end

local function draw()
  if cycle then
    local f = cycle
    cycle = (cycle + 1) % files
    return f + 1
  end
  if not cdf then return math.random(files) end
  local u = math.random()
  local lo, hi = 1, files
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  return lo
end

request = function()
  return wrk.format("GET", string.format("/lard/%05d.bin", draw() - 1))
end
"#,
        files = sizes.files,
        zipf = sizes.zipf,
    )
}
