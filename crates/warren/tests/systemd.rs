//! `warren up` under a service manager: it reports READY, RELOADING and STOPPING to
//! `$NOTIFY_SOCKET` and serves on the listeners passed to it (`LISTEN_FDS`), as systemd hands
//! them over; the programs it starts see neither. The unit files it ships are checked by
//! `systemd-analyze verify`, and socket activation is also driven by systemd's own
//! `systemd-socket-activate`.

mod support;
mod up_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use support::{BIN, EXIT_BOUND, T};
use up_support::{Up, addr, exchange, scratch};

/// The next notification the node sent, as its `KEY=value` lines.
fn notification(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification within the timeout");
    String::from_utf8(buf[..n].to_vec()).unwrap().lines().map(str::to_string).collect()
}

/// `warren up -c conf` with `fds` at descriptors 3, 4, … and `LISTEN_PID` set to its own pid,
/// as sd_listen_fds(3) describes the hand-over (a shell sets the pid, then execs).
fn with_listeners(conf: &Path, fds: &[i32], names: &str, notify: &Path) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", "LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\"", BIN, "up", "-c"]).arg(conf);
    cmd.env("LISTEN_FDS", fds.len().to_string()).env("LISTEN_FDNAMES", names).env("NOTIFY_SOCKET", notify);
    // Copied into a fixed array here: the child may not allocate between fork and exec.
    let mut passed = [-1; 4];
    assert!(fds.len() <= passed.len());
    passed[..fds.len()].copy_from_slice(fds);
    let count = fds.len();
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way first, so that moving one to 3 cannot close another that sits there.
            let mut high = [-1; 4];
            for (fd, moved) in passed[..count].iter().zip(&mut high) {
                *moved = nix::libc::fcntl(*fd, nix::libc::F_DUPFD, 100);
                if *moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high[..count].iter().enumerate() {
                if nix::libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::libc::close(*fd);
            }
            Ok(())
        });
    }
    cmd
}

#[test]
fn the_node_notifies_its_manager_and_serves_on_the_listeners_it_was_passed() {
    let dir = scratch("notify");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(T)).unwrap();
    // Bound here without SO_REUSEADDR: the node could not bind either address itself.
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (tcp_addr, udp_addr) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
    // `echo` gets its socket by name (its own `port = 0` is overridden); `daytime` by address.
    let conf = dir.join("warren.toml");
    std::fs::write(
        &conf,
        format!(
            "status = \"off\"\n\
             [[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n\
             [[service]]\nname = \"daytime\"\nbuiltin = \"daytime\"\nsocket_type = \"dgram\"\nbind = \"127.0.0.1\"\nport = {}\n\
             [[service]]\nname = \"env\"\nport = 0\nserver = \"/usr/bin/env\"\n",
            udp_addr.port()
        ),
    )
    .unwrap();
    let up = Up::spawn(with_listeners(&conf, &[tcp.as_raw_fd(), udp.as_raw_fd()], "echo:dgram", &notify_path));
    drop((tcp, udp));
    let lines = up.until(|l| l.starts_with("warren: up:"));
    assert_eq!(lines.last().unwrap(), "warren: up: 3 services, 2 listeners from the service manager");
    assert_eq!(addr(&lines, "echo", "tcp"), tcp_addr, "{lines:#?}");
    assert_eq!(addr(&lines, "daytime", "udp"), udp_addr, "{lines:#?}");
    assert_eq!(notification(&notify), ["READY=1", "STATUS=up: 3 services, 2 listeners from the service manager"]);

    assert_eq!(exchange(tcp_addr, b"ping"), "ping");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    client.send_to(b"?", udp_addr).unwrap();
    let mut buf = [0u8; 128];
    let n = client.recv(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).ends_with("-UTC\r\n"));
    // The programs the node starts inherit neither the notification socket nor the listeners.
    let env = exchange(addr(&lines, "env", "tcp"), b"");
    assert!(env.contains("PROTO=TCP"), "{env}");
    for leaked in ["NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        assert!(!env.contains(leaked), "{leaked} leaked into a child: {env}");
    }

    up.signal(Signal::SIGHUP);
    let reloading = notification(&notify);
    assert_eq!(reloading[0], "RELOADING=1", "{reloading:?}");
    let usec: u64 = reloading[1].strip_prefix("MONOTONIC_USEC=").expect("the monotonic time").parse().unwrap();
    assert!(usec > 0);
    assert_eq!(notification(&notify), ["READY=1", "STATUS=reloaded: 3 services"]);
    let lines = up.until(|l| l == "warren: reloaded");
    assert_eq!(addr(&lines, "echo", "tcp"), tcp_addr, "a reload keeps the passed socket");

    std::fs::write(&conf, "this is not toml [").unwrap();
    up.signal(Signal::SIGHUP);
    assert_eq!(notification(&notify)[0], "RELOADING=1");
    let failed = notification(&notify);
    assert_eq!(failed[0], "READY=1", "a failed reload still ends the reload: {failed:?}");
    assert!(failed[1].starts_with("STATUS=reload failed, configuration unchanged: "), "{failed:?}");
    assert_eq!(exchange(tcp_addr, b"still"), "still");

    up.signal(Signal::SIGTERM);
    let stopping = notification(&notify);
    assert_eq!(stopping[0], "STOPPING=1", "{stopping:?}");
    assert!(stopping[1].starts_with("STATUS=draining"), "{stopping:?}");
    let mut up = up;
    let status = support::wait_bounded(&mut up.child, EXIT_BOUND).expect("exits after draining");
    assert!(status.success());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_passed_descriptor_that_is_not_a_listener_is_refused_by_name() {
    let dir = scratch("refused");
    let notify_path = dir.join("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).unwrap();
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, "status = \"off\"\n[[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n").unwrap();
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut cmd = with_listeners(&conf, &[a.as_raw_fd()], "odd", &notify_path);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let (status, _, err) = support::run(cmd, b"", EXIT_BOUND);
    assert!(!status.success());
    assert!(err.contains("inherited socket \"odd\""), "{err}");
}

/// systemd's own socket activation tool listens, and starts the node only when the first client
/// connects; that client, queued in the backlog meanwhile, is answered.
#[test]
fn systemd_socket_activate_starts_the_node_on_the_first_connection_and_it_is_answered() {
    let tool = Path::new("/usr/bin/systemd-socket-activate");
    assert!(tool.exists(), "systemd-socket-activate is missing: apt-get install systemd");
    let dir = scratch("activate");
    let conf = dir.join("warren.toml");
    std::fs::write(&conf, "status = \"off\"\n[[service]]\nname = \"echo\"\nbuiltin = \"echo\"\nport = 0\n").unwrap();
    // The tool refuses port 0, so a free port is found first; another process may take it in
    // between, so a few tries.
    let (activator, addr) = (0..5)
        .find_map(|_| {
            let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
            let mut cmd = Command::new(tool);
            cmd.arg("-l").arg(addr.to_string()).args(["--fdname=echo", BIN, "up", "-c"]).arg(&conf);
            let activator = Up::spawn(cmd);
            let listening = support::eventually(T, || is_listening(activator.child.id(), addr));
            listening.then_some((activator, addr))
        })
        .expect("systemd-socket-activate listens");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    stream.write_all(b"first\n").unwrap();
    let mut answer = [0u8; 6];
    stream.read_exact(&mut answer).expect("the queued client is answered once the node is up");
    assert_eq!(&answer, b"first\n");
    let lines = activator.until(|l| l.starts_with("warren: up:"));
    assert_eq!(lines.last().unwrap(), "warren: up: 1 services, 1 listeners from the service manager");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Whether process `pid` holds a socket listening on `addr` (found through /proc: the socket
/// inodes of its descriptors against the kernel's TCP table), without connecting to it.
fn is_listening(pid: u32, addr: SocketAddr) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    let inodes: Vec<String> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect();
    let local = format!("0100007F:{:04X}", addr.port());
    std::fs::read_to_string("/proc/net/tcp").is_ok_and(|table| {
        table.lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // State 0A is LISTEN.
            f.len() > 9 && f[1] == local && f[3] == "0A" && inodes.iter().any(|i| i == f[9])
        })
    })
}

/// The shipped units pass systemd's own checks.
#[test]
fn the_shipped_unit_files_pass_systemd_analyze_verify() {
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd");
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(analyze.exists(), "systemd-analyze is missing: apt-get install systemd");
    // The units name /usr/bin/warren; verify checks that the program exists, so a scratch root
    // is not enough: point ExecStart at the built binary in copies of the units.
    let dir = scratch("units");
    for unit in ["warren.service", "warren.socket", "warren-hardened.service"] {
        let text = std::fs::read_to_string(units.join(unit)).unwrap_or_else(|e| panic!("{unit}: {e}"));
        std::fs::write(dir.join(unit), text.replace("/usr/bin/warren", BIN)).unwrap();
    }
    // verify also looks up each Documentation=man: page, so the pages `warren man` writes are
    // put where man finds them.
    let man = dir.join("man");
    let (status, _, err) =
        support::run(support::command(&["man", "--out", man.join("man1").to_str().unwrap()]), b"", T);
    assert!(status.success(), "{err}");
    for unit in ["warren.service", "warren.socket", "warren-hardened.service"] {
        let out = Command::new(analyze).arg("verify").arg(dir.join(unit)).env("MANPATH", &man).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        // Outside a booted system verify may mention the manager itself; nothing about our units.
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("warren")).collect();
        assert!(out.status.success() && ours.is_empty(), "{unit}: {}\n{err}", out.status);
    }
    std::fs::remove_dir_all(dir).unwrap();
}
