//! A throwaway PostgreSQL on loopback, for tests: Debian's server binaries (package
//! `postgresql`), a fresh cluster made by `initdb` in a directory of its own, the server on
//! 127.0.0.1 at a port the kernel just handed out and on a unix socket in that directory (and, for
//! a test's virtual network, on an address of it, behind a password), stopped and removed on drop. Nothing of the Debian package's own cluster (its service, `/etc/postgresql`,
//! `/var/lib/postgresql`) is used.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Gid, Pid, Uid, User};

use crate::free_port;

/// Where Debian installs each major version's server: `/usr/lib/postgresql/<major>/bin`.
const DEBIAN_SERVERS: &str = "/usr/lib/postgresql";
/// The cluster's superuser, trusted on loopback; [`LocalPostgres::url`] connects as it.
pub const USER: &str = "warren";
/// The database [`LocalPostgres::url`] names, created when the cluster is.
pub const DATABASE: &str = "warren";
/// How long a start (or a crash recovery) may take before it counts as failed.
const READY_WITHIN: Duration = Duration::from_secs(30);
/// How long an immediate shutdown may take before the server is killed.
const STOP_WITHIN: Duration = Duration::from_secs(10);

/// What a cluster promises about its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `fsync=off`: commits still reach the kernel, so even a killed server loses nothing; only
    /// a machine crash would, and the cluster does not outlive the test, so the fsyncs would be
    /// pure waiting.
    Fast,
    /// PostgreSQL's own settings (`fsync=on`, `synchronous_commit=on`), for the crash tests of
    /// a store: a commit is acknowledged only once its WAL is flushed, as in production, and
    /// [`LocalPostgres::kill9_and_restart`] goes through the same crash recovery.
    Fsync,
}

/// A running PostgreSQL cluster of a test's own. When the tests run as root, the cluster runs
/// as `postgres` (or `nobody`), because PostgreSQL refuses to run as root.
#[derive(Debug)]
pub struct LocalPostgres {
    cluster: Cluster,
    /// The postmaster.
    server: Child,
}

/// A cluster's files and settings; its directory is removed when it drops (after the server
/// has stopped, [`LocalPostgres`]'s own drop running first).
#[derive(Debug)]
struct Cluster {
    /// The server's `bin` directory (`initdb`, `postgres`, `createdb`).
    bin: PathBuf,
    /// Holds the data directory (`data`), the unix socket and the server's log.
    dir: PathBuf,
    /// The unprivileged user the cluster runs as, when the tests run as root.
    owner: Option<(Uid, Gid)>,
    port: u16,
    durability: Durability,
    network: Option<Network>,
}

/// Where a cluster also listens beyond loopback, and who may come in from there.
#[derive(Debug, Clone)]
struct Network {
    addr: IpAddr,
    /// The clients' network in CIDR form (`10.77.3.0/24`), admitted with the password only.
    clients: String,
    /// [`USER`]'s password, 32 random hex digits.
    password: String,
}

impl LocalPostgres {
    /// A fast cluster ([`Durability::Fast`]) in a fresh directory under the system's temp
    /// directory, with database [`DATABASE`]; `tag` names the directory.
    pub fn start(tag: &str) -> io::Result<LocalPostgres> {
        LocalPostgres::start_with(tag, Durability::Fast)
    }

    /// [`LocalPostgres::start`] with the given durability.
    pub fn start_with(tag: &str, durability: Durability) -> io::Result<LocalPostgres> {
        LocalPostgres::start_cluster(tag, durability, None)
    }

    /// A fast cluster that also listens on `addr`, an address of a network the test made (a
    /// [`crate::VirtualNet`] host's), and admits clients from `clients` (CIDR, `10.77.3.0/24`)
    /// with [`USER`]'s password only; loopback stays trusted. Call it from a thread inside the
    /// namespace that has `addr` ([`crate::VirtualNet::enter_thread`]): the server starts there.
    pub fn start_on_network(tag: &str, addr: IpAddr, clients: &str) -> io::Result<LocalPostgres> {
        let network = Network { addr, clients: clients.to_owned(), password: random_hex()? };
        LocalPostgres::start_cluster(tag, Durability::Fast, Some(network))
    }

    fn start_cluster(tag: &str, durability: Durability, network: Option<Network>) -> io::Result<LocalPostgres> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("warren-pg-{tag}-{}-{n}", std::process::id()));
        let bin = server_binaries(Path::new(DEBIAN_SERVERS))?;
        let (owner, port) = (unprivileged_owner()?, free_port()?);
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let cluster = Cluster { bin, dir, owner, port, durability, network };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&cluster.dir, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        cluster.initdb()?;
        let server = cluster.spawn_server()?;
        let mut pg = LocalPostgres { cluster, server };
        pg.wait_ready()?;
        pg.cluster.createdb()?;
        Ok(pg)
    }

    /// `postgres://warren@127.0.0.1:PORT/warren`: the superuser, trusted without a password.
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{DATABASE}", self.cluster.port)
    }

    /// `postgres://warren:PASSWORD@ADDR:PORT/warren` for a cluster started with
    /// [`LocalPostgres::start_on_network`]: how its network's clients reach it.
    pub fn network_url(&self) -> Option<String> {
        let network = self.cluster.network.as_ref()?;
        let host = match network.addr {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        Some(format!("postgres://{USER}:{}@{host}:{}/{DATABASE}", network.password, self.cluster.port))
    }

    /// The TCP port on 127.0.0.1 (it stays the same across [`LocalPostgres::kill9_and_restart`]).
    pub fn port(&self) -> u16 {
        self.cluster.port
    }

    /// The directory holding the cluster (`data`), its unix socket and its log (`server.log`).
    pub fn dir(&self) -> &Path {
        &self.cluster.dir
    }

    /// The postmaster's process id.
    pub fn pid(&self) -> u32 {
        self.server.id()
    }

    /// Kill the whole server with SIGKILL (the postmaster and every process it started, not
    /// one of them left to clean up), then start it again on the same data directory and port
    /// and wait until its crash recovery is over. Committed transactions are there afterwards.
    pub fn kill9_and_restart(&mut self) -> io::Result<()> {
        if let Some(status) = self.server.try_wait()? {
            return Err(self.cluster.failed(&format!("postgres had already exited ({status})")));
        }
        let postmaster = Pid::from_raw(self.server.id() as i32);
        // Stopped, the postmaster starts no process while its children are listed.
        kill(postmaster, Signal::SIGSTOP)?;
        let children = children_of(postmaster)?;
        kill(postmaster, Signal::SIGKILL)?;
        for child in &children {
            let _ = kill(*child, Signal::SIGKILL);
        }
        self.server.wait()?;
        // A new server refuses the data directory while a process of the old one is attached
        // to its shared memory.
        let deadline = Instant::now() + STOP_WITHIN;
        while children.iter().any(|child| is_running(*child)) {
            if Instant::now() > deadline {
                return Err(io::Error::other("the killed server's processes did not exit"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.server = self.cluster.spawn_server()?;
        self.wait_ready()
    }

    /// Polls `postmaster.pid`, which the postmaster marks `ready` once it accepts connections
    /// (what `pg_ctl start --wait` reads); the pid on its first line tells it from the file a
    /// killed server left.
    fn wait_ready(&mut self) -> io::Result<()> {
        let pid_file = self.cluster.dir.join("data/postmaster.pid");
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(status) = self.server.try_wait()? {
                return Err(self.cluster.failed(&format!("postgres exited ({status})")));
            }
            let contents = fs::read_to_string(&pid_file).unwrap_or_default();
            let lines: Vec<&str> = contents.lines().collect();
            let ours = lines.first().is_some_and(|pid| pid.trim() == self.server.id().to_string());
            if ours && lines.get(7).is_some_and(|status| status.trim() == "ready") {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.cluster.failed(&format!("postgres not ready within {READY_WITHIN:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Cluster {
    /// A command running one of the server's programs in [`LocalPostgres::dir`], as the
    /// cluster's owner.
    fn program(&self, name: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(name));
        cmd.current_dir(&self.dir).stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner {
            // Also clears the supplementary groups (std does when root sets a uid).
            cmd.uid(uid.as_raw()).gid(gid.as_raw());
        }
        cmd
    }

    fn initdb(&self) -> io::Result<()> {
        let mut cmd = self.program("initdb");
        // --no-sync: the new cluster's files reach the kernel, which is all a killed server needs;
        // only a machine crash right after initdb would tell, and the cluster dies with the test.
        cmd.args(["-D", "data", "-U", USER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"]);
        let Some(network) = &self.network else { return run(cmd, "initdb") };
        // The password reaches initdb in a file of the cluster's, never on a command line.
        let pwfile = self.dir.join("password");
        File::create(&pwfile)?.write_all(network.password.as_bytes())?;
        if let Some((uid, gid)) = self.owner {
            std::os::unix::fs::chown(&pwfile, Some(uid.as_raw()), Some(gid.as_raw()))?;
        }
        cmd.arg("--pwfile=password");
        run(cmd, "initdb")?;
        fs::remove_file(&pwfile)?;
        // After initdb's own lines (trust on loopback and the socket), which match first.
        let mut hba = File::options().append(true).open(self.dir.join("data/pg_hba.conf"))?;
        writeln!(hba, "host all all {} scram-sha-256", network.clients)
    }

    /// The postmaster, listening on 127.0.0.1 (trust, which initdb grants to loopback and the
    /// unix socket, reaches no other host), on the network address if the cluster has one (whose
    /// clients need the password), and on a socket in [`LocalPostgres::dir`] (not
    /// `/var/run/postgresql`, which belongs to the Debian package's cluster).
    fn spawn_server(&self) -> io::Result<Child> {
        let log = File::options().create(true).append(true).open(self.log_path())?;
        let mut cmd = self.program("postgres");
        let listen = match &self.network {
            Some(network) => format!("listen_addresses=127.0.0.1,{}", network.addr),
            None => "listen_addresses=127.0.0.1".to_owned(),
        };
        cmd.args(["-D", "data", "-p", &self.port.to_string()])
            .args(["-c", &listen])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.dir.display()))
            .stdout(log.try_clone()?)
            .stderr(log);
        match self.durability {
            Durability::Fast => cmd.args(["-c", "fsync=off"]),
            // After a crash the server first makes everything in the data directory durable:
            // one syncfs of its file system instead of an fsync per file (seconds, in a test).
            Durability::Fsync => cmd.args(["-c", "recovery_init_sync_method=syncfs"]),
        };
        cmd.spawn()
    }

    /// Creates [`DATABASE`] through 127.0.0.1, which also shows that loopback TCP is served.
    fn createdb(&self) -> io::Result<()> {
        let mut cmd = Command::new(self.bin.join("createdb"));
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER, "-w", DATABASE]);
        run(cmd, "createdb")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// An error about the server, with the end of its log.
    fn failed(&self, what: &str) -> io::Error {
        let log = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        io::Error::other(format!("{what}; the end of {}:\n{tail}", self.log_path().display()))
    }
}

impl Drop for LocalPostgres {
    /// An immediate shutdown (SIGQUIT): the postmaster ends its children and releases its
    /// shared memory, which a SIGKILL would leave behind; SIGKILL only if it takes too long.
    fn drop(&mut self) {
        let postmaster = Pid::from_raw(self.server.id() as i32);
        // Once reaped, the postmaster's pid may be another process's.
        let reaped = !matches!(self.server.try_wait(), Ok(None));
        if !reaped && kill(postmaster, Signal::SIGQUIT).is_ok() {
            let deadline = Instant::now() + STOP_WITHIN;
            while matches!(self.server.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The `bin` directory of the highest major version under `root` that has a server and initdb.
fn server_binaries(root: &Path) -> io::Result<PathBuf> {
    let majors = fs::read_dir(root).into_iter().flatten().flatten();
    let best = majors
        .filter_map(|entry| {
            let major: u32 = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file()).then_some((major, bin))
        })
        .max_by_key(|(major, _)| *major);
    best.map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "no PostgreSQL server in {}/<major>/bin: install Debian's `postgresql` package \
                 (apt-get install postgresql)",
                root.display()
            ),
        )
    })
}

/// Who runs the cluster: nobody else unless the tests run as root, then Debian's `postgres`
/// user, or `nobody` where the package did not create it.
fn unprivileged_owner() -> io::Result<Option<(Uid, Gid)>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    for name in ["postgres", "nobody"] {
        if let Some(user) = User::from_name(name)? {
            return Ok(Some((user.uid, user.gid)));
        }
    }
    Err(io::Error::other("running as root, and neither a `postgres` nor a `nobody` user exists"))
}

/// 16 random bytes from the system's generator, in hex.
fn random_hex() -> io::Result<String> {
    let mut bytes = [0u8; 16];
    File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Runs `cmd` to completion; its output becomes the error if it fails.
fn run(mut cmd: Command, what: &str) -> io::Result<()> {
    let out = cmd.output()?;
    if out.status.success() {
        return Ok(());
    }
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Err(io::Error::other(format!("{what} failed ({}):\n{stdout}{stderr}", out.status)))
}

/// The processes whose parent is `parent`, from `/proc/<pid>/stat`.
fn children_of(parent: Pid) -> io::Result<Vec<Pid>> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses, so from the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1));
        if ppid.and_then(|ppid| ppid.parse::<i32>().ok()) == Some(parent.as_raw()) {
            children.push(Pid::from_raw(pid));
        }
    }
    Ok(children)
}

/// Whether `pid` still runs: a zombie has already left the server's shared memory.
fn is_running(pid: Pid) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("warren-pg-unit-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fake_server(root: &Path, major: &str) {
        let bin = root.join(major).join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(bin.join("postgres"), "").unwrap();
        fs::write(bin.join("initdb"), "").unwrap();
    }

    /// Majors compare as numbers (15 above 9), and a directory without a server does not count.
    #[test]
    fn the_highest_installed_major_is_chosen() {
        let root = scratch("majors");
        fake_server(&root, "9");
        fake_server(&root, "15");
        fs::create_dir_all(root.join("17/bin")).unwrap();
        assert_eq!(server_binaries(&root).unwrap(), root.join("15/bin"));
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn no_server_names_the_debian_package() {
        let root = scratch("none");
        let err = server_binaries(&root).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("apt-get install postgresql"), "{err}");
        let err = server_binaries(&root.join("missing")).unwrap_err();
        assert!(err.to_string().contains("`postgresql` package"), "{err}");
        fs::remove_dir_all(&root).unwrap();
    }

    /// The owner the cluster runs as is never root: PostgreSQL would refuse to start.
    #[test]
    fn the_cluster_never_runs_as_root() {
        let owner = unprivileged_owner().unwrap();
        assert_eq!(owner.is_some(), Uid::effective().is_root());
        assert!(owner.is_none_or(|(uid, _)| !uid.is_root()));
    }

    #[test]
    fn a_process_unknown_to_proc_is_not_running() {
        assert!(is_running(Pid::this()));
        assert!(!is_running(Pid::from_raw(i32::MAX)));
    }
}
