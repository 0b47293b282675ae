//! The two tests where models differ in kind rather than degree: holding thousands of idle
//! connections (C10k, anchors §0.3), and whether one blocking call stalls the other
//! connections. Both are measured, never inferred from the model's name.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{sleep, timeout};

/// How long a connect may take. Past the listen backlog (somaxconn 4096 here) a model that does
/// not accept leaves SYNs unanswered; the kernel retries them at 1 s and 3 s, so this is long
/// enough to see a slow acceptor succeed and short enough to bound the phase.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time for the server to refuse what it will refuse before connections are checked.
const SETTLE: Duration = Duration::from_millis(300);
/// How long an idle connection has to echo the byte that checks it.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// How N concurrent connections fared.
#[derive(Clone, Debug, Default)]
pub struct Idle {
    /// Held open, and echoed the check byte in time.
    pub served: usize,
    /// Closed or reset by the server (its refusal).
    pub refused: usize,
    /// Could not connect in time, or held open but never answered (stuck in the backlog).
    pub failed: usize,
    pub first_error: Option<String>,
}

/// Open connections, held until this is dropped (with a reset, so that tens of thousands of
/// client ports do not sit in TIME_WAIT before the next model's turn).
#[derive(Debug)]
pub struct Held {
    streams: Vec<TcpStream>,
}

impl Drop for Held {
    fn drop(&mut self) {
        for stream in &self.streams {
            let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
        }
    }
}

enum Verdict {
    Served,
    Refused,
    Failed(String),
}

/// Open `n` connections at once, let them sit, then send one byte on every one and expect it
/// back. The connections stay open (in [`Held`]) so the caller can measure the server holding
/// them.
pub async fn hold(addr: SocketAddr, n: usize) -> (Idle, Held) {
    let mut idle = Idle::default();
    let mut connecting = JoinSet::new();
    for _ in 0..n {
        connecting.spawn(async move { timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await });
    }
    let mut streams = Vec::with_capacity(n);
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok(Ok(Ok(stream))) => streams.push(stream),
            Ok(Ok(Err(e))) => note(&mut idle, format!("connect: {e}")),
            Ok(Err(_)) => note(&mut idle, format!("connect: no answer within {CONNECT_TIMEOUT:?}")),
            Err(e) => note(&mut idle, format!("client task: {e}")),
        }
    }
    sleep(SETTLE).await;
    let mut checking = JoinSet::new();
    for stream in streams {
        checking.spawn(check(stream));
    }
    let mut held = Held { streams: Vec::with_capacity(n) };
    while let Some(joined) = checking.join_next().await {
        let Ok((verdict, stream)) = joined else {
            note(&mut idle, "client task panicked".into());
            continue;
        };
        held.streams.push(stream);
        match verdict {
            Verdict::Served => idle.served += 1,
            Verdict::Refused => idle.refused += 1,
            Verdict::Failed(e) => note(&mut idle, e),
        }
    }
    (idle, held)
}

fn note(idle: &mut Idle, error: String) {
    idle.failed += 1;
    idle.first_error.get_or_insert(error);
}

/// One byte there and back on a connection that has been idle.
async fn check(mut stream: TcpStream) -> (Verdict, TcpStream) {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
    let exchange = async {
        stream.write_all(b"?").await?;
        let mut byte = [0u8; 1];
        let n = stream.read(&mut byte).await?;
        std::io::Result::Ok((n, byte[0]))
    };
    let verdict = match timeout(CHECK_TIMEOUT, exchange).await {
        Ok(Ok((1, b'?'))) => Verdict::Served,
        Ok(Ok((0, _))) => Verdict::Refused,
        Ok(Ok(_)) => Verdict::Failed("check: wrong byte echoed".into()),
        Ok(Err(e)) if matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted) => Verdict::Refused,
        Ok(Err(e)) => Verdict::Failed(format!("check: {e}")),
        Err(_) => Verdict::Failed(format!("check: no echo within {CHECK_TIMEOUT:?}")),
    };
    (verdict, stream)
}

/// What the second client of a blocking server saw.
#[derive(Clone, Debug)]
pub enum Stall {
    /// B's first byte came only after this long: A's blocking call held it up.
    Stalled(Duration),
    /// B was answered this quickly while A's call was still blocking.
    Unaffected(Duration),
    /// B got nothing at all within the wait.
    NoAnswer(Duration),
}

impl Stall {
    /// Classify B's wait against the server's blocking `delay`: waiting more than half of it
    /// can only mean B queued behind A's call (an unloaded server answers in well under 1 ms).
    pub fn classify(waited: Option<Duration>, delay: Duration, limit: Duration) -> Stall {
        match waited {
            None => Stall::NoAnswer(limit),
            Some(w) if w >= delay / 2 => Stall::Stalled(w),
            Some(w) => Stall::Unaffected(w),
        }
    }
}

/// Connect client A to a server whose every connection makes a blocking call, then `gap` later
/// client B, and time B from its connect to its first byte (at most `limit`).
pub async fn blocking_probe(addr: SocketAddr, gap: Duration, limit: Duration) -> Result<Option<Duration>, String> {
    let a = tokio::spawn(async move { first_byte(addr, limit).await });
    sleep(gap).await;
    let b = first_byte(addr, limit).await?;
    match a.await {
        Ok(Ok(Some(_))) => Ok(b),
        Ok(Ok(None)) => Err(format!("client A got nothing within {limit:?}")),
        Ok(Err(e)) => Err(format!("client A: {e}")),
        Err(e) => Err(format!("client A: {e}")),
    }
}

/// Time from connect to the first byte received, or `None` after `limit`.
async fn first_byte(addr: SocketAddr, limit: Duration) -> Result<Option<Duration>, String> {
    let start = Instant::now();
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await? {
            0 => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed without a byte")),
            _ => Ok(start.elapsed()),
        }
    };
    match timeout(limit, attempt).await {
        Ok(Ok(waited)) => Ok(Some(waited)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_is_judged_against_the_delay() {
        let (delay, limit) = (Duration::from_millis(300), Duration::from_secs(2));
        assert!(matches!(Stall::classify(Some(Duration::from_millis(280)), delay, limit), Stall::Stalled(_)));
        assert!(matches!(Stall::classify(Some(Duration::from_micros(400)), delay, limit), Stall::Unaffected(_)));
        assert!(matches!(Stall::classify(None, delay, limit), Stall::NoAnswer(_)));
    }
}
