//! The load for `warren bench http`: `wrk` pinned to the load CPU, its output parsed, and the
//! idle test (thousands of keep-alive connections that made one request each and then sit).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::timeout;

/// What one wrk run measured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wrk {
    pub rate: f64,
    /// Requests completed in the run (the rate's numerator).
    pub requests: u64,
    pub p99_ms: f64,
    /// connect, read, write, timeout.
    pub socket_errors: [u64; 4],
    pub non_2xx: u64,
}

impl Wrk {
    pub fn errors(&self) -> u64 {
        self.socket_errors.iter().sum::<u64>() + self.non_2xx
    }
}

/// A Lua script for wrk (`-s PATH`) and the arguments its `init` gets (after `--`).
#[derive(Clone, Copy, Debug)]
pub struct Script<'a> {
    pub path: &'a Path,
    pub args: &'a [String],
}

/// Run `wrk -t1` on `cpu` for `duration`, bounded by a wall-clock limit.
pub fn run(
    wrk: &Path,
    cpu: Option<usize>,
    url: &str,
    conns: usize,
    duration: Duration,
    close: bool,
) -> anyhow::Result<Wrk> {
    run_script(wrk, cpu, url, conns, duration, close, None)
}

/// [`run`], with the requests made by `script` when there is one.
pub fn run_script(
    wrk: &Path,
    cpu: Option<usize>,
    url: &str,
    conns: usize,
    duration: Duration,
    close: bool,
    script: Option<Script<'_>>,
) -> anyhow::Result<Wrk> {
    let mut command = match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(wrk);
            c
        }
        None => Command::new(wrk),
    };
    let secs = duration.as_secs().max(1);
    command.args(["-t1", "-c", &conns.to_string(), "-d", &format!("{secs}s"), "--timeout", "2s", "--latency"]);
    if close {
        command.args(["-H", "Connection: close"]);
    }
    if let Some(script) = script {
        command.arg("-s").arg(script.path);
    }
    command.arg(url);
    if let Some(script) = script {
        command.arg("--").args(script.args);
    }
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn()?;
    let deadline = Instant::now() + Duration::from_secs(secs + 15);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("wrk did not finish within {}s", secs + 15);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse(&text) {
        Some(w) if out.status.success() => Ok(w),
        _ => bail!("wrk failed ({}): {}{}", out.status, String::from_utf8_lossy(&out.stderr).trim(), text.trim()),
    }
}

/// `1.23ms`, `456.00us`, `1.02s`, `2.00m` in milliseconds.
fn latency_ms(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(value * scale)
}

/// The figures from wrk's output; `None` without a Requests/sec line.
pub fn parse(text: &str) -> Option<Wrk> {
    let mut result = Wrk::default();
    let mut rate = None;
    for line in text.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            rate = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("99%") {
            result.p99_ms = latency_ms(v.trim())?;
        } else if let Some((n, _)) = line.split_once(" requests in ") {
            result.requests = n.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            result.non_2xx = v.trim().parse().ok()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            for (i, part) in v.split(',').enumerate().take(4) {
                result.socket_errors[i] = part.split_whitespace().last()?.parse().ok()?;
            }
        }
    }
    result.rate = rate?;
    Some(result)
}

/// How the idle test went.
#[derive(Clone, Debug, Default)]
pub struct Idle {
    pub held: usize,
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Connections that stay open until dropped (then reset, to leave no TIME_WAIT behind).
pub struct Held(Vec<TcpStream>);

impl Drop for Held {
    fn drop(&mut self) {
        for stream in &self.0 {
            let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
        }
    }
}

/// Open `n` keep-alive connections, 256 connecting at a time, each making one request for
/// `path` (of `body` bytes) and then sitting idle, held open in [`Held`].
pub async fn hold(addr: SocketAddr, n: usize, path: &'static str, body: usize) -> (Idle, Held) {
    let gate = Arc::new(Semaphore::new(256));
    let mut tasks = JoinSet::new();
    for _ in 0..n {
        let gate = gate.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire().await;
            timeout(Duration::from_secs(5), one_request(addr, path, body))
                .await
                .unwrap_or_else(|_| Err("no response within 5s".into()))
        });
    }
    let (mut idle, mut held) = (Idle::default(), Held(Vec::with_capacity(n)));
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(stream)) => {
                idle.held += 1;
                held.0.push(stream);
            }
            Ok(Err(e)) => {
                idle.failed += 1;
                idle.first_error.get_or_insert(e);
            }
            Err(e) => {
                idle.failed += 1;
                idle.first_error.get_or_insert(e.to_string());
            }
        }
    }
    (idle, held)
}

async fn one_request(addr: SocketAddr, path: &str, body: usize) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(body + 512);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before the whole response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                return Err(String::from_utf8_lossy(&buf[..end.min(60)]).into_owned());
            }
            if buf.len() >= end + 4 + body {
                return Ok(stream);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Running 3s test @ http://127.0.0.1:8080/1k.bin
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   750.12us  200.00us   5.00ms   90.00%
    Req/Sec    62.00k     1.00k   64.00k    80.00%
  Latency Distribution
     50%  700.00us
     75%  800.00us
     90%    0.90ms
     99%    1.50ms
  186000 requests in 3.00s, 220.00MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 5
Requests/sec:  62000.50
Transfer/sec:     73.33MB
";

    #[test]
    fn parses_wrk_output() {
        let w = parse(SAMPLE).unwrap();
        assert_eq!(w, Wrk { rate: 62000.5, requests: 186_000, p99_ms: 1.5, socket_errors: [0, 12, 0, 3], non_2xx: 5 });
        assert_eq!(w.errors(), 20);
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_none());
        assert_eq!(latency_ms("456.00us"), Some(0.456));
        assert_eq!(latency_ms("1.02s"), Some(1020.0));
    }
}
