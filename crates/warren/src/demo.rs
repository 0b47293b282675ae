//! `warren demo`: every classic server on loopback, each under a different model, then each
//! client tried once. Until the node (`warren up`) exists, this is the main job.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::cli::DemoArgs;

/// One server of the demo: `warren serve` arguments.
struct Entry {
    protocol: &'static str,
    model: &'static str,
    extra: &'static [&'static str],
}

const ENTRIES: &[Entry] = &[
    Entry { protocol: "echo", model: "event", extra: &[] },
    Entry { protocol: "echo", model: "iterative", extra: &["--udp"] },
    Entry { protocol: "discard", model: "thread", extra: &[] },
    Entry { protocol: "daytime", model: "pool", extra: &[] },
    Entry { protocol: "daytime", model: "hybrid", extra: &["--udp"] },
    Entry { protocol: "time", model: "fork", extra: &[] },
    Entry { protocol: "time", model: "green", extra: &["--udp"] },
    Entry { protocol: "timeserver", model: "thread", extra: &["--delay", "1s"] },
    Entry { protocol: "pingpong", model: "prefork", extra: &["--delay", "100ms"] },
    Entry { protocol: "chat", model: "pool", extra: &[] },
];

struct Running {
    entry: &'static Entry,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

pub fn run(args: &DemoArgs) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut running = Vec::new();
    for entry in ENTRIES {
        running.push(start(&exe, entry)?);
    }
    println!("warren demo: {} servers on loopback\n", running.len());
    println!("| protocol | transport | model | address | try it |");
    println!("|---|---|---|---|---|");
    for r in &running {
        let udp = r.entry.extra.contains(&"--udp");
        println!(
            "| {} | {} | {} | {} | `{}` |",
            r.entry.protocol,
            if udp { "udp" } else { "tcp" },
            r.entry.model,
            r.addr,
            try_it(r.entry.protocol, udp, r.addr)
        );
    }
    println!("\nself-check:");
    let mut failures = 0;
    for r in &running {
        let udp = r.entry.extra.contains(&"--udp");
        let label = format!("{} ({}) under {}", r.entry.protocol, if udp { "udp" } else { "tcp" }, r.entry.model);
        match check(r.entry.protocol, udp, r.addr) {
            Ok(what) => println!("  ok    {label}: {what}"),
            Err(e) => {
                failures += 1;
                println!("  FAIL  {label}: {e:#}");
            }
        }
    }
    if failures > 0 {
        bail!("{failures} self-checks failed");
    }
    if args.once {
        return Ok(());
    }
    println!("\nserving until Ctrl-C");
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])?;
    signals.forever().next();
    Ok(())
}

fn start(exe: &std::path::Path, entry: &'static Entry) -> anyhow::Result<Running> {
    let mut child = Command::new(exe)
        .args(["serve", entry.protocol, "--model", entry.model, "--listen", "127.0.0.1:0", "-d", "0"])
        .args(entry.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next().context("server exited before it was ready")??;
    let addr = line.rsplit(" on ").next().context("no address in the readiness line")?.parse()?;
    // Keep draining the server's output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Ok(Running { entry, child, addr })
}

fn try_it(protocol: &str, udp: bool, addr: SocketAddr) -> String {
    let (host, port) = (addr.ip(), addr.port());
    let udp = if udp { " --udp" } else { "" };
    match protocol {
        "timeserver" => format!("warren timeclient {host} {port}"),
        "pingpong" => format!("warren pingpong client {host} {port} --hits 5"),
        "chat" => format!("warren chat {host} {port}"),
        other => format!("warren {other} {host} {port}{udp}"),
    }
}

/// Talk to one server the way its client would; describe what came back.
fn check(protocol: &str, udp: bool, addr: SocketAddr) -> anyhow::Result<String> {
    let timeout = Duration::from_secs(5);
    if udp {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        socket.set_read_timeout(Some(timeout))?;
        socket.send_to(b"hello over udp\n", addr)?;
        let mut buf = [0u8; 1024];
        let n = socket.recv(&mut buf)?;
        return Ok(describe(protocol, &buf[..n]));
    }
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    let script: &[u8] = match protocol {
        "echo" => b"hello over tcp\n",
        "discard" => b"into the void\n",
        "pingpong" => b"",
        "chat" => b"/nick demo\n/join #demo\nhello, channel\n/quit\n",
        _ => b"",
    };
    if protocol == "pingpong" {
        drop(stream);
        return play_pingpong(addr);
    }
    stream.write_all(script)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(describe(protocol, &reply))
}

fn describe(protocol: &str, reply: &[u8]) -> String {
    match protocol {
        "time" if reply.len() == 4 => {
            let unix = warren_proto::time::decode_time(reply.try_into().expect("4 bytes"));
            let wall = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
            format!("{}", humantime::format_rfc3339_seconds(wall))
        }
        "discard" if reply.is_empty() => "nothing came back, as it should".into(),
        _ => String::from_utf8_lossy(reply).trim_end().replace('\n', " | ").replace('\r', ""),
    }
}

fn play_pingpong(addr: SocketAddr) -> anyhow::Result<String> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args([
            "pingpong",
            "client",
            &addr.ip().to_string(),
            &addr.port().to_string(),
            "--hits",
            "2",
            "--delay",
            "10ms",
        ])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("client failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().collect::<Vec<_>>().join(" | "))
}
