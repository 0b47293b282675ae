//! An open-loop HTTP load: requests sent on a fixed schedule (`rate` a second, spread over a few
//! keep-alive connections), each latency measured from when the request *should* have been sent,
//! so a stall counts for every request it delays (no coordinated omission, unlike wrk's). The
//! bench runs it at half of the highest rate it measured, where "added latency" means something:
//! far from saturation, the switch's own cost.
//!
//! Every loop stops by itself: at the end of the schedule, or a connection's first failure after
//! [`MAX_ERRORS`] reconnects.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::hist::Histogram;

/// A request slower than this failed.
const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Failures a connection may see (each followed by a reconnect) before it stops.
const MAX_ERRORS: u64 = 100;
/// The largest response head read.
const MAX_HEAD: usize = 16 * 1024;

/// What a paced run measured.
#[derive(Clone, Debug, Default)]
pub struct Paced {
    /// Requests answered.
    pub done: u64,
    pub errors: u64,
    pub hist: Histogram,
}

/// `rate` GETs of `path` a second on `conns` keep-alive connections to `addr`, for `duration`;
/// with `close`, each request on a connection of its own (`Connection: close`), opened when due.
pub async fn run(addr: SocketAddr, path: &str, rate: f64, conns: usize, duration: Duration, close: bool) -> Paced {
    let conns = conns.max(1);
    let start = Instant::now() + Duration::from_millis(50);
    let total = (rate * duration.as_secs_f64()) as u64;
    let connection = if close { "Connection: close\r\n" } else { "" };
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{connection}\r\n").into_bytes();
    let mut tasks = JoinSet::new();
    for k in 0..conns as u64 {
        let request = request.clone();
        // Connection k sends requests k, k + conns, k + 2·conns, ... of the whole schedule.
        let due = move |i: u64| start + Duration::from_secs_f64((i * conns as u64 + k) as f64 / rate);
        let count = total / conns as u64 + u64::from(k < total % conns as u64);
        tasks.spawn(async move {
            let mut out = Paced::default();
            let mut stream: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(64 * 1024);
            for i in 0..count {
                let when = due(i);
                tokio::time::sleep_until(when.into()).await;
                let answered = timeout(OP_TIMEOUT, async {
                    if stream.is_none() {
                        let s = TcpStream::connect(addr).await?;
                        s.set_nodelay(true)?;
                        stream = Some(s);
                    }
                    let s = stream.as_mut().expect("connected above");
                    s.write_all(&request).await?;
                    read_response(s, &mut buf).await
                })
                .await;
                match answered {
                    Ok(Ok(())) => {
                        out.done += 1;
                        out.hist.record(when.elapsed());
                        if close {
                            stream = None;
                        }
                    }
                    _ => {
                        out.errors += 1;
                        stream = None;
                        if out.errors >= MAX_ERRORS {
                            break;
                        }
                    }
                }
            }
            out
        });
    }
    let mut all = Paced::default();
    while let Some(joined) = tasks.join_next().await {
        if let Ok(one) = joined {
            all.done += one.done;
            all.errors += one.errors;
            all.hist.merge(&one.hist);
        }
    }
    all
}

/// Read one response with a Content-Length body (what every server in the bench sends for a
/// file), leaving nothing behind since requests are not pipelined.
async fn read_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    buf.clear();
    let (head, length) = loop {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(buf) {
            Ok(httparse::Status::Complete(head)) => {
                if response.code != Some(200) {
                    return Err(std::io::Error::other(format!("status {:?}", response.code)));
                }
                let length = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse::<usize>().ok())
                    .ok_or_else(|| std::io::Error::other("no Content-Length"))?;
                break (head, length);
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => continue,
            _ => return Err(std::io::Error::other("bad response head")),
        }
    };
    let mut left = (head + length).saturating_sub(buf.len());
    let mut sink = [0u8; 64 * 1024];
    while left > 0 {
        let n = stream.read(&mut sink[..left.min(64 * 1024)]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        left -= n;
    }
    Ok(())
}
