//! xinetd's format: defaults, `+=`/`-=`, includedir, errors naming file and line, ignored
//! attributes reported, and Debian's stock `/etc/xinetd.d` files running unchanged.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use warren_node::config::{Kind, Protocol, Transport};
use warren_node::xinetd;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-xinetd-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file of Debian's xinetd package (2.3.15.3), as installed in `/etc/xinetd.d`.
const STOCK: [&str; 12] = [
    "chargen",
    "chargen-udp",
    "daytime",
    "daytime-udp",
    "discard",
    "discard-udp",
    "echo",
    "echo-udp",
    "servers",
    "services",
    "time",
    "time-udp",
];
const CLASSIC: [&str; 5] = ["chargen", "daytime", "discard", "echo", "time"];

#[test]
fn debians_stock_files_load_unchanged_all_disabled() {
    let conf = std::fs::read_to_string(Path::new(FIXTURES).join("xinetd.conf")).unwrap();
    let conf = conf.replace("includedir /etc/xinetd.d", &format!("includedir {FIXTURES}/xinetd.d"));
    let config = xinetd::parse(&conf, "xinetd.conf", None).unwrap();
    assert!(config.services.is_empty());
    let mut disabled = config.disabled.clone();
    disabled.sort();
    // The `-udp` files declare the `-dgram` ids once more.
    let mut want: Vec<String> = CLASSIC
        .iter()
        .flat_map(|s| [format!("{s}-dgram"), format!("{s}-dgram"), format!("{s}-stream")])
        .chain(["servers".into(), "services".into()])
        .collect();
    want.sort();
    assert_eq!(disabled, want);
}

#[test]
fn defaults_operators_and_includedir() {
    let dir = scratch("ops");
    std::fs::write(
        dir.join("svc"),
        "service hello\n{\n\ttype = UNLISTED\n\tport = 0\n\tsocket_type = stream\n\twait = no\n\tuser = root\n\tserver = /bin/echo\n\tserver_args = a b\n\tonly_from += 10.0.0.0/8\n\tlog_on_success -= PID\n\tenv = A=1 B=2\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("skipped.dpkg-old"), "this is not xinetd syntax").unwrap();
    std::fs::write(dir.join("backup~"), "neither is this").unwrap();
    let conf = format!(
        "defaults\n{{\n\tonly_from = 127.0.0.1\n\tlog_on_success = PID HOST\n\tinstances = 7\n\tlog_type = SYSLOG daemon info\n}}\nincludedir {}\n",
        dir.display()
    );
    let config = xinetd::parse(&conf, "xinetd.conf", None).unwrap();
    let s = &config.services[0];
    assert_eq!(s.name, "hello");
    assert_eq!(s.limits.instances, Some(7), "from defaults");
    let only = s.access.only_from.as_ref().unwrap();
    assert_eq!(only.len(), 2, "+= adds to the defaults' list");
    assert!(!s.log.pid && s.log.host, "-= removes from it");
    let Kind::Exec(exec) = &s.kind else { panic!("exec") };
    assert_eq!(exec.argv, ["echo", "a", "b"]);
    assert_eq!(exec.env, [("A".into(), "1".into()), ("B".into(), "2".into())]);
    assert_eq!(s.limits.cps.map(|c| c.rate), Some(50), "xinetd's default cps");
    assert!(config.ignored.iter().any(|i| i.contains("xinetd.conf:6: log_type: ignored")), "{:?}", config.ignored);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn errors_name_the_file_and_line() {
    let cases = [
        ("service x\n{\n\tsocket_type = stream\n\tbogus = 1\n}\n", "t.conf:4: unknown attribute \"bogus\""),
        ("service x\n{\n\tsocket_type = stream\n", "t.conf:1: section is never closed"),
        (
            "service x\n{\n\ttype = UNLISTED\n\tsocket_type = stream\n\twait = no\n}\n",
            "an UNLISTED service needs a port",
        ),
        (
            "service x\n{\n\ttype = UNLISTED\n\tport = 1\n\tsocket_type = stream\n\twait = no\n\tserver = /bin/true\n}\n",
            "user is required",
        ),
        ("service x\n{\n\tport = 1\n\tsocket_type = stream\n\tflags = IDONLY\n}\n", "IDONLY"),
        ("frobnicate\n", "t.conf:1: expected defaults"),
        ("defaults\n{\n\tserver = /bin/sh\n}\n", "cannot be set in defaults"),
    ];
    for (text, want) in cases {
        let err = xinetd::parse(text, "t.conf", None).unwrap_err().to_string();
        assert!(err.contains(want), "{text:?}: {err}");
    }
}

#[test]
fn meaningless_attributes_are_reported_not_dropped() {
    let text = "service x\n{\n\ttype = UNLISTED INTERNAL\n\tid = echo-x\n\tport = 0\n\tsocket_type = stream\n\twait = no\n\tmdns = yes\n\tlibwrap = x\n\tflags = REUSE NODELAY\n\tlog_on_success += USERID\n}\n";
    let config = xinetd::parse(text, "t.conf", None).unwrap();
    assert!(
        config.services.is_empty() && config.disabled == ["echo-x"],
        "xinetd disables an internal service it lacks"
    );
    assert!(config.ignored.iter().any(|n| n.contains("t.conf:1: service x: no internal service \"x\": disabled")));
    let config = xinetd::parse(&text.replace("service x", "service echo"), "t.conf", None).unwrap();
    let notes = config.ignored.join("\n");
    for attr in ["mdns", "libwrap", "USERID"] {
        assert!(notes.contains(attr), "{attr} not reported: {notes}");
    }
    let s = &config.services[0];
    assert!(s.socket.nodelay);
    assert!(matches!(&s.kind, Kind::Builtin(b) if b.protocol == Protocol::Echo));
}

/// The stock files with only `disable = yes` turned to `no`, as an administrator enables them,
/// on their well-known ports: inside a network namespace of the test's own, so no port of the
/// machine is touched. xinetd starts 15 services: both sections of each `-dgram` id (the
/// classic file's and the `-udp` file's, on one port), and not `servers` or `services`, which
/// it lacks. warren serves the same ten listeners, with a warning naming both sections of each
/// id and one for each missing service; where xinetd is installed, the counts and listeners are
/// compared with its own. Needs root (or CAP_NET_ADMIN); otherwise the test says so and passes.
#[test]
fn debians_stock_files_all_enabled_run_on_their_well_known_ports() {
    let dir = scratch("stock");
    for name in STOCK {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join("xinetd.d").join(name)).unwrap();
        assert!(text.contains("disable\t\t= yes"), "{name}");
        std::fs::write(dir.join(name), text.replace("disable\t\t= yes", "disable\t\t= no")).unwrap();
    }
    let conf = std::fs::read_to_string(Path::new(FIXTURES).join("xinetd.conf")).unwrap();
    let conf = conf.replace("/etc/xinetd.d", &dir.display().to_string());
    std::fs::write(dir.join("xinetd.conf"), conf).unwrap();
    let path = dir.join("xinetd.conf");
    let xinetd = real_xinetd(&path, &dir);
    let d = dir.display().to_string();
    std::thread::spawn(move || {
        if let Err(e) = warren_testkit::netns::isolate_thread() {
            eprintln!("skipped: cannot make a network namespace ({e}; needs root)");
            return;
        }
        let config = xinetd::load(&path, None).unwrap();
        assert_eq!(config.services.len(), 10);
        assert!(config.services.iter().all(|s| s.listen.addr.ip().is_loopback()));
        let notes = config.ignored.join("\n");
        let seconds: Vec<&String> = config.ignored.iter().filter(|n| n.contains("is also the service at")).collect();
        assert_eq!(seconds.len(), 5, "{notes}");
        for (name, port, first_line) in
            [("chargen", 19, 19), ("daytime", 13, 17), ("discard", 9, 16), ("echo", 7, 17), ("time", 37, 19)]
        {
            let want = format!(
                "{d}/{name}-udp:4: id \"{name}-dgram\" is also the service at {d}/{name}:{first_line}, \
                 on the same udp 127.0.0.1:{port}: serving that one"
            );
            assert!(notes.contains(&want), "{want}\n{notes}");
        }
        for name in ["servers", "services"] {
            let want = format!("{d}/{name}:4: service {name}: no internal service \"{name}\": disabled");
            assert!(notes.contains(&want), "{want}\n{notes}");
        }
        if let Some((started, listening)) = &xinetd {
            assert_eq!(config.services.len() + seconds.len(), *started, "xinetd's count of services");
            let ours: BTreeSet<(String, u16)> =
                config.services.iter().map(|s| (s.listen.transport.name().to_string(), s.listen.addr.port())).collect();
            assert_eq!(&ours, listening, "the listeners xinetd opens");
        }
        let node = support::TestNode::with(config);
        let tcp = |port: u16, input: &[u8], want: usize| {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(input).unwrap();
            let mut out = vec![0; want];
            s.read_exact(&mut out).unwrap();
            out
        };
        assert_eq!(tcp(7, b"ping", 4), b"ping");
        assert!(tcp(13, b"", 5).iter().all(u8::is_ascii));
        assert_eq!(tcp(37, b"", 4).len(), 4);
        assert_eq!(&tcp(19, b"", 74)[72..], b"\r\n");
        let mut discard = TcpStream::connect(("127.0.0.1", 9)).unwrap();
        discard.write_all(b"gone").unwrap();
        discard.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(discard.read(&mut [0; 8]).unwrap(), 0, "discard sends nothing");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for port in [7, 13, 37, 19] {
            udp.send_to(b"x", ("127.0.0.1", port)).unwrap();
            let mut buf = [0; 1024];
            let (_, from) = udp.recv_from(&mut buf).unwrap();
            assert_eq!(from.port(), port);
        }
        let udp_services = node.status().services.iter().filter(|s| s.transport == Transport::Udp.name()).count();
        assert_eq!(udp_services, 5);
    })
    .join()
    .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

/// What Debian's xinetd makes of `conf` in a network namespace of its own: the count it logs
/// (`Started working: N available services`) and the transports and ports it listens on. `None`
/// where xinetd is not installed or no namespace can be made.
fn real_xinetd(conf: &Path, dir: &Path) -> Option<(usize, BTreeSet<(String, u16)>)> {
    let Some(program) = ["/usr/sbin/xinetd", "/usr/bin/xinetd"].into_iter().map(PathBuf::from).find(|p| p.exists())
    else {
        eprintln!("xinetd is not installed: not compared with it");
        return None;
    };
    let (conf, dir) = (conf.to_owned(), dir.to_owned());
    std::thread::spawn(move || {
        warren_testkit::netns::isolate_thread().ok()?;
        let log = dir.join("xinetd.log");
        // Spawned from this thread, so it runs in this thread's namespace.
        let mut child = Command::new(program)
            .args(["-dontfork", "-filelog"])
            .arg(&log)
            .arg("-pidfile")
            .arg(dir.join("xinetd.pid"))
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let started = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let count = text.lines().find_map(|l| l.split("Started working: ").nth(1)?.split(' ').next()?.parse().ok());
            if let Some(count) = count {
                break count;
            }
            assert!(Instant::now() < deadline, "xinetd did not start: {text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let listening = listening();
        child.kill().unwrap();
        child.wait().unwrap();
        Some((started, listening))
    })
    .join()
    .unwrap()
}

/// The TCP ports listened on and UDP ports bound in this thread's network namespace.
fn listening() -> BTreeSet<(String, u16)> {
    let mut ports = BTreeSet::new();
    for (file, transport, state) in
        [("tcp", "tcp", "0A"), ("tcp6", "tcp", "0A"), ("udp", "udp", "07"), ("udp6", "udp", "07")]
    {
        let text = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
            if let (Some(port), true) = (port, fields[3] == state) {
                ports.insert((transport.to_string(), port));
            }
        }
    }
    ports
}

/// A second section with a taken id is started as xinetd starts it: on another listener under a
/// name of its own (registered under the id still), on the same listener not at all, since
/// only one of the two would ever be reached; each with a warning naming both sections.
#[test]
fn a_second_section_with_a_taken_id_is_served_as_xinetd_does() {
    let section = |socket: &str, wait: &str| {
        format!(
            "service echo\n{{\n\ttype = INTERNAL UNLISTED\n\tid = e\n\tport = 0\n\tsocket_type = {socket}\n\twait = {wait}\n}}\n"
        )
    };
    let text = [section("stream", "no"), section("dgram", "yes"), section("stream", "no")].concat();
    let config = xinetd::parse(&text, "t.conf", None).unwrap();
    let names: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["e", "e-2"]);
    assert_eq!(config.services[1].listen.transport, Transport::Udp);
    assert_eq!(config.services[1].register.as_deref(), Some("e"), "registered under its id");
    let notes = config.ignored.join("\n");
    assert!(
        notes.contains(
            "t.conf:9: id \"e\" is also the service at t.conf:1: serving both, as xinetd does, this one as \"e-2\""
        ),
        "{notes}"
    );
    assert!(
        notes.contains(
            "t.conf:17: id \"e\" is also the service at t.conf:1, on the same tcp 127.0.0.1:0: serving that one"
        ),
        "{notes}"
    );
}
