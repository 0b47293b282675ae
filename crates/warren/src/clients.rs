//! Command-line clients for the classic protocols, each a few lines over a socket.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, UdpSocket};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use warren_proto::time::decode_time;

use crate::cli::ClientArgs;
use crate::serve::resolve;

/// `warren echo`: standard input to the server, the echo to standard output.
pub fn echo(args: &ClientArgs) -> anyhow::Result<()> {
    if args.udp {
        let socket = udp_socket(args)?;
        let mut reply = vec![0u8; 65_536];
        for line in io::stdin().lines() {
            let line = format!("{}\n", line?);
            socket.send(line.as_bytes())?;
            let n = socket.recv(&mut reply).context("no echo before the timeout")?;
            io::stdout().write_all(&reply[..n])?;
        }
        return Ok(());
    }
    let stream = connect(args)?;
    let mut writer = stream.try_clone()?;
    let timeout = args.timeout;
    let sender = std::thread::spawn(move || -> io::Result<()> {
        io::copy(&mut io::stdin().lock(), &mut writer)?;
        // Half-close: the server echoes what is in flight, then closes.
        writer.shutdown(Shutdown::Write)?;
        writer.set_read_timeout(Some(timeout))
    });
    io::copy(&mut &stream, &mut io::stdout().lock())?;
    sender.join().map_err(|_| anyhow::anyhow!("stdin reader panicked"))??;
    Ok(())
}

/// `warren discard`: standard input to the server, nothing back.
pub fn discard(args: &ClientArgs) -> anyhow::Result<()> {
    let mut stream = connect(args)?;
    let sent = io::copy(&mut io::stdin().lock(), &mut stream)?;
    stream.shutdown(Shutdown::Write)?;
    let mut sink = Vec::new();
    stream.read_to_end(&mut sink)?;
    eprintln!("sent {sent} bytes");
    Ok(())
}

/// `warren daytime`: print the server's date line.
pub fn daytime(args: &ClientArgs) -> anyhow::Result<()> {
    let reply = ask(args, 128)?;
    io::stdout().write_all(&reply)?;
    Ok(())
}

/// `warren time`: print the server's RFC 868 time, decoded.
pub fn time(args: &ClientArgs) -> anyhow::Result<()> {
    let reply = ask(args, 4)?;
    let bytes: [u8; 4] =
        reply.as_slice().try_into().map_err(|_| anyhow::anyhow!("expected 4 bytes, got {}", reply.len()))?;
    let unix = decode_time(bytes);
    let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    println!("{} ({} seconds since 1900)", humantime::format_rfc3339_seconds(wall), u32::from_be_bytes(bytes));
    Ok(())
}

/// `warren timeclient`: the course's TimeClient.
pub fn timeclient(host: &str, port: u16) -> anyhow::Result<()> {
    let mut stream =
        TcpStream::connect(resolve(host, port)?).with_context(|| format!("cannot connect to {host}:{port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = String::new();
    stream.read_to_string(&mut line)?;
    println!("Time on host {host} is {}", line.trim_end());
    Ok(())
}

/// `warren chat`.
pub fn chat(host: Option<String>, port: Option<u16>) -> anyhow::Result<()> {
    let server = match (host, port) {
        (Some(host), port) => Some((host, port.unwrap_or(warren_proto::chat::DEFAULT_PORT))),
        (None, Some(_)) => bail!("a port needs a host"),
        (None, None) => None,
    };
    crate::chat_client::run(server)
}

/// `warren pingpong client`.
pub fn pingpong(host: &str, port: u16, options: &warren_proto::pingpong::Options) -> anyhow::Result<()> {
    crate::pingpong_client::run(host, port, options)
}

/// Read a whole short answer: over TCP until the server closes, over UDP one datagram.
fn ask(args: &ClientArgs, max: usize) -> anyhow::Result<Vec<u8>> {
    if args.udp {
        let socket = udp_socket(args)?;
        socket.send(b"\n")?;
        let mut reply = vec![0u8; 65_536];
        let n = socket.recv(&mut reply).context("no answer before the timeout")?;
        reply.truncate(n.min(max));
        return Ok(reply);
    }
    let stream = connect(args)?;
    let mut reply = Vec::new();
    stream.take(max as u64).read_to_end(&mut reply)?;
    Ok(reply)
}

fn connect(args: &ClientArgs) -> anyhow::Result<TcpStream> {
    let addr = resolve(&args.host, args.port)?;
    let stream =
        TcpStream::connect_timeout(&addr, args.timeout).with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(args.timeout))?;
    Ok(stream)
}

fn udp_socket(args: &ClientArgs) -> anyhow::Result<UdpSocket> {
    let addr = resolve(&args.host, args.port)?;
    let local: std::net::SocketAddr = if addr.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(local)?;
    socket.connect(addr)?;
    socket.set_read_timeout(Some(args.timeout))?;
    Ok(socket)
}
