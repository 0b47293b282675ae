//! `warren up` end to end: readiness lines, exec and builtin services, `warren status`, SIGHUP
//! reloads, SIGTERM drains, xinetd files and config errors.

mod support;
mod up_support;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{EXIT_BOUND, T, command, run};
use up_support::{Up, addr, exchange, scratch};

fn config(dir: &Path, extra: &str) -> String {
    format!(
        "status = \"unix:{}/status.sock\"\n[[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n\
         [[service]]\nname = \"hello\"\nport = 0\nserver = \"/bin/echo\"\nserver_args = [\"hello\"]\n{extra}",
        dir.display()
    )
}

#[test]
fn up_serves_reloads_on_sighup_and_drains_on_sigterm() {
    let dir = scratch("cycle");
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, config(&dir, "")).unwrap();
    let up = Up::start(&["up", "-c", conf.to_str().unwrap()]);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    assert_eq!(lines.last().unwrap(), "warren: up: 2 services");
    let (echo, hello) = (addr(&lines, "echo", "tcp"), addr(&lines, "hello", "tcp"));
    assert!(
        lines.iter().any(|l| l.starts_with("warren: serving hello (tcp) under exec nowait /bin/echo on 127.0.0.1:"))
    );
    assert_eq!(exchange(echo, b"ping"), "ping");
    assert_eq!(exchange(hello, b""), "hello\n");

    let status_flag = format!("--status=unix:{}/status.sock", dir.display());
    let (ok, out, err) = run(command(&["status", &status_flag]), b"", T);
    assert!(ok.success(), "{err}");
    assert!(out.contains("hello") && out.contains("exec nowait") && out.contains("builtin echo (event)"), "{out}");
    assert!(out.contains("2 services"), "{out}");

    std::fs::write(&conf, config(&dir, "[[service]]\nname = \"later\"\nbuiltin = \"daytime\"\nport = 0\n")).unwrap();
    up.signal(Signal::SIGHUP);
    let lines = up.until(|l| l == "warren: reloaded");
    assert_eq!((addr(&lines, "echo", "tcp"), addr(&lines, "hello", "tcp")), (echo, hello), "unchanged listeners kept");
    assert!(exchange(addr(&lines, "later", "tcp"), b"").ends_with("-UTC\r\n"));

    std::fs::write(&conf, "this is not toml [").unwrap();
    up.signal(Signal::SIGHUP);
    assert_eq!(exchange(hello, b""), "hello\n", "a bad reload leaves the node serving");

    up.signal(Signal::SIGTERM);
    let lines = up.until(|l| l == "warren: stopped");
    assert!(lines.iter().any(|l| l.starts_with("warren: draining")), "{lines:#?}");
    let mut up = up;
    let status = support::wait_bounded(&mut up.child, EXIT_BOUND).expect("exits after draining");
    assert!(status.success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn up_reads_xinetd_files_and_lists_ignored_attributes() {
    let dir = scratch("xinetd");
    std::fs::create_dir_all(dir.join("xinetd.d")).unwrap();
    std::fs::write(
        dir.join("xinetd.d/hello"),
        "service hello\n{\n\ttype = UNLISTED\n\tport = 0\n\tsocket_type = stream\n\twait = no\n\tuser = root\n\t\
         server = /bin/echo\n\tserver_args = hi there\n\tlibwrap = hello\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("xinetd.conf"), format!("defaults\n{{\n}}\nincludedir {}/xinetd.d\n", dir.display()))
        .unwrap();
    let conf = dir.join("xinetd.conf");
    let status = format!("--status=unix:{}/s.sock", dir.display());
    let up = Up::start(&["up", "--xinetd", conf.to_str().unwrap(), &status]);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    if nix::unistd::geteuid().is_root() {
        assert_eq!(exchange(addr(&lines, "hello", "tcp"), b""), "hi there\n");
    }
    up.signal(Signal::SIGTERM);
    up.until(|l| l == "warren: stopped");
    let mut up = up;
    support::wait_bounded(&mut up.child, EXIT_BOUND).expect("exits");
    let mut err = String::new();
    up.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("xinetd.d/hello:10: libwrap: ignored: TCP wrappers"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn config_errors_name_file_and_line_and_the_default_prints() {
    let dir = scratch("errors");
    let conf = dir.join("bad.toml");
    std::fs::write(&conf, "[[service]]\nname = \"x\"\nport = 0\nfrobnicate = 1\n").unwrap();
    let (status, _, err) = run(command(&["up", "-c", conf.to_str().unwrap()]), b"", T);
    assert!(!status.success());
    assert!(err.contains("bad.toml") && err.contains("unknown attribute \"frobnicate\""), "{err}");
    let (status, out, _) = run(command(&["up", "--print-default"]), b"", T);
    assert!(status.success());
    for service in ["http", "chat", "pingpong", "echo", "discard", "daytime", "time", "chargen", "agents", "registry"] {
        assert!(out.contains(&format!("name = \"{service}\"")), "{service} missing from the default");
    }
    let default = warren_node::toml_config::parse(&out, "default").unwrap();
    assert_eq!(default.services.len(), 11, "every service of the default is enabled, the registry too");
    assert!(default.disabled.is_empty(), "{:?}", default.disabled);
    assert!(default.services.iter().all(|s| s.listen.addr.ip().is_loopback()));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `warren lookup NAME` against the registry at `registry`: its output lines (`NAME ENDPOINT`),
/// or the error.
fn lookup(registry: SocketAddr, name: &str) -> Result<Vec<String>, String> {
    let (ok, out, err) = run(command(&["lookup", name, "--registry", &registry.to_string()]), b"", T);
    if ok.success() { Ok(out.lines().map(String::from).collect()) } else { Err(err) }
}

/// Waits until `count` services have printed `registered …`.
fn registered(up: &Up, count: usize) -> Vec<String> {
    let mut seen = 0;
    up.until(|l| {
        seen += usize::from(l.starts_with("registered "));
        seen == count
    })
}

#[test]
fn up_hosts_the_registry_and_registers_every_service_under_a_lease() {
    let dir = scratch("registry");
    let conf = dir.join("warren.toml");
    let registry = format!(
        "[[service]]\nname = \"registry\"\nbuiltin = \"registry\"\nport = 0\ndata = \"{}/registry\"\n\
         [[service]]\nname = \"quiet\"\nbuiltin = \"daytime\"\nport = 0\nregister = \"no\"\n",
        dir.display()
    );
    let text =
        config(&dir, &registry).replace("server = \"/bin/echo\"", "register = \"greeter\"\nserver = \"/bin/echo\"");
    std::fs::write(&conf, &text).unwrap();
    // The node keeps the token its registrations are owned by under XDG_STATE_HOME.
    let mut cmd = command(&["up", "-c", conf.to_str().unwrap()]);
    cmd.env_remove("WARREN_TOKEN").env("XDG_STATE_HOME", dir.join("state"));
    let up = Up::spawn(cmd);
    let mut lines = up.until(|l| l.starts_with("warren: up:"));
    lines.extend(registered(&up, 3));
    let (echo, hello, registry) =
        (addr(&lines, "echo", "tcp"), addr(&lines, "hello", "tcp"), addr(&lines, "registry", "tcp"));
    assert_eq!(lookup(registry, "echo").unwrap(), [format!("echo tcp {echo} weight=1")]);
    assert_eq!(
        lookup(registry, "greeter").unwrap(),
        [format!("greeter tcp {hello} weight=1")],
        "registered as `register` names it"
    );
    assert_eq!(lookup(registry, "registry").unwrap(), [format!("registry tcp {registry} weight=1")]);
    assert!(lookup(registry, "quiet").is_err(), "register = no keeps a service out");
    assert!(lookup(registry, "hello").is_err(), "registered under its register name only");

    // A reload that removes a service releases its lease at once; the others stay.
    std::fs::write(&conf, text.replacen("[[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n", "", 1))
        .unwrap();
    up.signal(Signal::SIGHUP);
    // The lease is released in the background: its line may come before or after the reload's.
    let (mut released, mut reloaded) = (false, false);
    lines.extend(up.until(|l| {
        released |= l.starts_with("released echo ");
        reloaded |= l == "warren: reloaded";
        released && reloaded
    }));
    assert!(lookup(registry, "echo").is_err(), "echo left the registry with the reload");
    assert_eq!(lookup(registry, "greeter").unwrap(), [format!("greeter tcp {hello} weight=1")]);

    up.signal(Signal::SIGTERM);
    lines.extend(up.until(|l| l == "warren: stopped"));
    // A service the reload kept keeps its lease: registered once, released once (at the stop).
    let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!((count("registered greeter "), count("released greeter ")), (1, 1), "{lines:#?}");
    let mut up = up;
    assert!(support::wait_bounded(&mut up.child, EXIT_BOUND).expect("exits").success());
    assert!(dir.join("state/warren/node.token").exists(), "the node's token is kept for its next start");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn up_registers_with_a_configured_registry_and_leaves_it_on_sigterm() {
    let dir = scratch("external");
    let data = dir.join("registry");
    let server = support::Server::spawn(&["registry", "--listen", "127.0.0.1:0", "--data", data.to_str().unwrap()]);
    let conf = dir.join("warren.toml");
    // A long TTL: the names must go because the node releases them, not because leases lapse.
    let top = format!("registry = \"{}\"\nregistry_ttl = 300\n", server.addr);
    std::fs::write(&conf, top + &config(&dir, "")).unwrap();
    let mut cmd = command(&["up", "-c", conf.to_str().unwrap()]);
    cmd.env("WARREN_TOKEN", "node-token");
    let up = Up::spawn(cmd);
    let mut lines = up.until(|l| l.starts_with("warren: up:"));
    lines.extend(registered(&up, 2));
    let echo = addr(&lines, "echo", "tcp");
    assert_eq!(lookup(server.addr, "echo").unwrap(), [format!("echo tcp {echo} weight=1")]);
    assert_eq!(lookup(server.addr, "hello").unwrap(), [format!("hello tcp {} weight=1", addr(&lines, "hello", "tcp"))]);

    up.signal(Signal::SIGTERM);
    up.until(|l| l == "warren: stopped");
    assert!(lookup(server.addr, "echo").is_err(), "released on SIGTERM, 300 s before its lease would lapse");
    assert!(lookup(server.addr, "hello").is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

/// The status line of a `GET path` over HTTP/1.0.
fn http_status(addr: SocketAddr, path: &str) -> (String, String) {
    let answer = exchange(addr, format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes());
    let status = answer.lines().next().unwrap_or_default().to_string();
    (status, answer)
}

#[test]
fn the_http_builtin_serves_the_nodes_own_site_never_the_start_directory_nor_dot_files() {
    let dir = scratch("site");
    // The directory `warren up` starts in holds a repository and a secret.
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(dir.join("secret.txt"), "secret").unwrap();
    let served = dir.join("served");
    std::fs::create_dir_all(served.join(".git")).unwrap();
    std::fs::write(served.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(served.join("page.txt"), "page").unwrap();
    let extra = format!(
        "[[service]]\nname = \"site\"\nbuiltin = \"http\"\nport = 0\n\
         [[service]]\nname = \"docs\"\nbuiltin = \"http\"\nport = 0\nroot = \"{0}\"\n\
         [[service]]\nname = \"open\"\nbuiltin = \"http\"\nport = 0\nroot = \"{0}\"\ndotfiles = true\n",
        served.display()
    );
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, config(&dir, &extra)).unwrap();
    let mut cmd = command(&["up", "-c", conf.to_str().unwrap()]);
    cmd.current_dir(&dir).env("XDG_DATA_HOME", dir.join("data"));
    let up = Up::spawn(cmd);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    let (site, docs, open) = (addr(&lines, "site", "tcp"), addr(&lines, "docs", "tcp"), addr(&lines, "open", "tcp"));

    let (status, page) = http_status(site, "/");
    assert_eq!(status, "HTTP/1.1 200 OK", "{page}");
    assert!(page.contains("<h1>warren node</h1>"), "the site's index page: {page}");
    assert!(dir.join("data/warren/www/index.html").is_file(), "the site directory was made");
    for path in ["/secret.txt", "/.git/HEAD"] {
        assert_eq!(http_status(site, path).0, "HTTP/1.1 404 Not Found", "{path}: the start directory is not served");
    }
    assert_eq!(http_status(docs, "/page.txt").0, "HTTP/1.1 200 OK");
    assert_eq!(http_status(docs, "/.git/HEAD").0, "HTTP/1.1 404 Not Found", "dot-files hidden by default");
    let (status, head) = http_status(open, "/.git/HEAD");
    assert_eq!(status, "HTTP/1.1 200 OK", "dotfiles = true serves them");
    assert!(head.ends_with("ref: refs/heads/main\n"), "{head}");
    drop(up);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_default_status_directory_must_be_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = scratch("statusdir");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let private = tmp.join(format!("warren-{}", nix::unistd::getuid()));
    let with_env = |args: &[&str]| {
        let mut cmd = command(args);
        cmd.env_remove("XDG_RUNTIME_DIR").env("TMPDIR", &tmp);
        cmd
    };
    // No `status` in the file: the default path, in $TMPDIR/warren-<uid>.
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, "[[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n").unwrap();

    // Squatted: made by someone else first, or open to others.
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (status, _, err) = run(with_env(&["status"]), b"", T);
    assert!(!status.success() && err.contains("others have access"), "{err}");
    let (status, _, err) = run(with_env(&["up", "-c", conf.to_str().unwrap()]), b"", T);
    assert!(!status.success() && err.contains("others have access"), "up refuses to listen there: {err}");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    nix::unistd::chown(&private, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (status, _, err) = run(with_env(&["status"]), b"", T);
    assert!(!status.success() && err.contains("another user owns it"), "{err}");
    std::fs::remove_dir(&private).unwrap();

    // Absent: `warren up` makes it, private, and `warren status` finds the node there.
    let up = Up::spawn(with_env(&["up", "-c", conf.to_str().unwrap()]));
    up.until(|l| l.starts_with("warren: up:"));
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let (status, out, err) = run(with_env(&["status"]), b"", T);
    assert!(status.success() && out.contains("builtin echo"), "{out}{err}");
    drop(up);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_drain_kills_children_that_ignore_sigterm_and_exits() {
    let dir = scratch("stubborn");
    let pidfile = dir.join("child.pid");
    let script = format!("echo $$ > {}; trap '' TERM; while :; do sleep 1; done", pidfile.display());
    let extra = format!(
        "[[service]]\nname = \"stubborn\"\nport = 0\nserver = \"/bin/sh\"\nserver_args = [\"-c\", \"{}\"]\n",
        script.replace('"', "\\\"")
    );
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, config(&dir, &extra)).unwrap();
    let up = Up::start(&["up", "-c", conf.to_str().unwrap(), "--grace", "100ms", "--kill-after", "300ms"]);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    let _client = TcpStream::connect(addr(&lines, "stubborn", "tcp")).unwrap();
    let started = std::time::Instant::now();
    let pid = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            break pid;
        }
        assert!(started.elapsed() < T, "the child never started");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };

    up.signal(Signal::SIGTERM);
    let mut up = up;
    let status =
        support::wait_bounded(&mut up.child, EXIT_BOUND).expect("the node exits although its child ignores SIGTERM");
    assert!(status.success());
    // Reaped by the node: no such process any more (not even a zombie, which kill(0) would find).
    assert_eq!(kill(Pid::from_raw(pid), None), Err(nix::errno::Errno::ESRCH), "the child was killed and reaped");
    std::fs::remove_dir_all(dir).unwrap();
}

/// An exec service whose child writes its pid to `pidfile` and then runs `then` (keeping the
/// connection or listener it was handed); `extra` adds settings.
fn pid_service(name: &str, program: &str, pidfile: &Path, then: &str, extra: &str) -> String {
    let script = format!("echo $$ > {}; exec {then}", pidfile.display());
    format!(
        "[[service]]\nname = \"{name}\"\nport = 0\nserver = \"{program}\"\nserver_args = [\"-c\", \"{}\"]\n{extra}",
        script.replace('"', "\\\"")
    )
}

/// The pid a child wrote to `pidfile`, once it has.
fn read_pid(pidfile: &Path) -> i32 {
    let started = std::time::Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(pidfile).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            return pid;
        }
        assert!(started.elapsed() < T, "the child never wrote {}", pidfile.display());
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Whether `pid` is gone within `T`: this process being a child subreaper, an orphan killed
/// with its node is re-parented here and reaped below (`kill(pid, 0)` would still find a zombie).
fn gone_within_bound(pid: i32) -> bool {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let started = std::time::Instant::now();
    while started.elapsed() < T {
        let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        if kill(Pid::from_raw(pid), None) == Err(nix::errno::Errno::ESRCH) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    false
}

/// Kill the node alone (not its process group, which its children share) with SIGKILL.
fn kill_node(up: &mut Up) {
    up.signal(Signal::SIGKILL);
    up.child.wait().unwrap();
}

#[test]
fn a_node_killed_with_sigkill_takes_its_children_along() {
    // Part of the fault suite (docs/faults.md): on a loopback of its own.
    warren_testkit::netns::isolate_test();
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = scratch("orphans");
    let pidfile = |name: &str| dir.join(format!("{name}.pid"));
    // One service per way of starting a child: the vfork-style clone, std's spawn for a program
    // named without a slash, the fork-style clone (for the umask), and a `wait` listener.
    let services = [
        pid_service("vfork", "/bin/sh", &pidfile("vfork"), "cat", ""),
        pid_service("path", "sh", &pidfile("path"), "cat", ""),
        pid_service("clone", "/bin/sh", &pidfile("clone"), "cat", "umask = \"022\"\n"),
        pid_service("listener", "/bin/sh", &pidfile("listener"), "sleep 60", "wait = true\n"),
    ];
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, config(&dir, &services.concat())).unwrap();
    let mut up = Up::start(&["up", "-c", conf.to_str().unwrap()]);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    let names = ["vfork", "path", "clone", "listener"];
    // The clients stay connected: a child holding its connection has no reason to exit.
    let _clients: Vec<_> = names.iter().map(|n| TcpStream::connect(addr(&lines, n, "tcp")).unwrap()).collect();
    let pids: Vec<_> = names.iter().map(|n| (n, read_pid(&pidfile(n)))).collect();

    kill_node(&mut up);
    for (name, pid) in pids {
        assert!(gone_within_bound(pid), "the {name} child {pid} outlived its node");
    }
    drop(up);
    std::fs::remove_dir_all(dir).unwrap();
}

const CGROUP_BASES: [&str; 3] = ["/sys/fs/cgroup/warren", "/sys/fs/cgroup/memory/warren", "/sys/fs/cgroup/pids/warren"];

/// The cgroups of `service`'s children on this machine (v2, or v1 memory and pids).
fn cgroup_leaves(service: &str) -> Vec<PathBuf> {
    CGROUP_BASES
        .iter()
        .flat_map(|base| std::fs::read_dir(Path::new(base).join(service)).into_iter().flatten())
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

#[test]
fn a_restarted_node_removes_the_cgroups_a_killed_node_left() {
    // Part of the fault suite (docs/faults.md): on a loopback of its own.
    warren_testkit::netns::isolate_test();
    if !nix::unistd::geteuid().is_root()
        || warren_node::sandbox::Cgroups::detect() == warren_node::sandbox::Cgroups::Unavailable
    {
        eprintln!("skipped: sandboxing needs root and a cgroup hierarchy with memory and pids");
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let dir = scratch("stale-cgroups");
    let pidfile = dir.join("boxed.pid");
    // A service name of this test's own, so that no other node's leaves are counted.
    let service = format!("stale-{}", std::process::id());
    let conf = dir.join("warren.toml");
    let boxed = pid_service(&service, "/bin/sh", &pidfile, "cat", "sandbox_pids_max = 16\n");
    std::fs::write(&conf, config(&dir, &boxed)).unwrap();
    let mut up = Up::start(&["up", "-c", conf.to_str().unwrap()]);
    let lines = up.until(|l| l.starts_with("warren: up:"));
    let _client = TcpStream::connect(addr(&lines, &service, "tcp")).unwrap();
    let pid = read_pid(&pidfile);
    let left = cgroup_leaves(&service);
    assert!(!left.is_empty(), "the running child has its cgroup");

    kill_node(&mut up);
    assert!(gone_within_bound(pid), "the child died with its node");
    assert!(left.iter().all(|leaf| leaf.exists()), "nobody removed the killed node's cgroups yet");
    drop(up);

    let again = Up::start(&["up", "-c", conf.to_str().unwrap()]);
    again.until(|l| l.starts_with("warren: up:"));
    let remaining: Vec<_> = left.iter().filter(|leaf| leaf.exists()).collect();
    assert!(remaining.is_empty(), "stale cgroups left after a restart: {remaining:?}");
    drop(again);
    for base in CGROUP_BASES {
        let _ = std::fs::remove_dir(Path::new(base).join(&service));
    }
    std::fs::remove_dir_all(dir).unwrap();
}
