//! Closed-loop load generators for echo: C connections, each sending a request and reading the
//! echo back, over and over, for a fixed time. Two regimes, because they rank the models
//! differently (anchors §0.2): keep-alive (one connection per client for the whole run) and a
//! new connection per request (connect, send, read, close), the only regime where `fork` is
//! even measurable.
//!
//! Every loop stops by itself: at the deadline, after [`MAX_REQUESTS`] per connection, or at
//! its first error. Latency is measured from send (or connect) to the last echoed byte, as wrk
//! does, so it shares wrk's coordinated omission; the table calls it closed-loop latency.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;

use crate::hist::Histogram;

/// A request that takes longer than this failed: long enough for a loaded single core, short
/// enough that a stuck connection ends its loop well within the bench's time budget.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);
/// Upper bound on requests per connection, so a loop ends even if the clock misbehaves.
const MAX_REQUESTS: u64 = 50_000_000;

/// What one load run measured.
#[derive(Clone, Debug, Default)]
pub struct Load {
    /// Requests completed by the deadline, per second of the run.
    pub rate: f64,
    /// Latency percentiles in microseconds over every completed request.
    pub p50: Option<u64>,
    pub p99: Option<u64>,
    /// Requests (or connections) that failed: connect errors, timeouts, resets, wrong echoes.
    pub errors: u64,
    /// The first failure, to say what went wrong.
    pub first_error: Option<String>,
    /// Clients that completed no request within the run: queued behind other connections
    /// (`iterative`, `prefork`) rather than slow.
    pub starved: u64,
    /// Clients in the run.
    pub clients: u64,
}

/// What one client connection's loop reports.
#[derive(Debug, Default)]
struct Tally {
    hist: Histogram,
    on_time: u64,
    errors: u64,
    /// Clients that never got going (their connect failed).
    starved: u64,
    first_error: Option<String>,
}

impl Tally {
    fn fail(&mut self, what: impl Into<String>) {
        self.errors += 1;
        self.first_error.get_or_insert_with(|| what.into());
    }
}

/// Keep-alive: connect `conns` clients first, then let each exchange `payload`-sized echoes on
/// its own connection for `duration`.
pub async fn keep_alive(addr: SocketAddr, conns: usize, duration: Duration, payload: usize) -> Load {
    let mut connecting = JoinSet::new();
    for _ in 0..conns {
        connecting.spawn(async move {
            match timeout(OP_TIMEOUT, connect(addr)).await {
                Ok(connected) => connected.map_err(|e| format!("connect: {e}")),
                Err(_) => Err("connect: timed out".to_owned()),
            }
        });
    }
    let mut streams = Vec::with_capacity(conns);
    let mut failed = Tally::default();
    while let Some(joined) = connecting.join_next().await {
        match joined {
            Ok(Ok(stream)) => streams.push(stream),
            Ok(Err(e)) => failed.fail(e),
            Err(e) => failed.fail(format!("client task: {e}")),
        }
    }
    failed.starved = failed.errors;
    // The clock starts once every client holds its connection, so connection set-up (a thread
    // or a process per connection) is not charged to the keep-alive rate.
    let start = Instant::now();
    let deadline = start + duration;
    let mut clients = JoinSet::new();
    for stream in streams {
        clients.spawn(keep_alive_client(stream, deadline, payload));
    }
    finish(clients, failed, conns, duration).await
}

async fn keep_alive_client(mut stream: TcpStream, deadline: Instant, payload: usize) -> Tally {
    let request = request(payload);
    let mut echo = vec![0u8; payload];
    let mut tally = Tally::default();
    for _ in 0..MAX_REQUESTS {
        if Instant::now() >= deadline {
            break;
        }
        let sent = Instant::now();
        let exchange = async {
            stream.write_all(&request).await?;
            stream.read_exact(&mut echo).await?;
            std::io::Result::Ok(())
        };
        match timeout(OP_TIMEOUT, exchange).await {
            Ok(Ok(())) if echo == request => tally.record(sent, deadline),
            Ok(Ok(())) => return fail(tally, "echo came back different"),
            Ok(Err(e)) => return fail(tally, format!("exchange: {e}")),
            Err(_) => return fail(tally, format!("no echo within {OP_TIMEOUT:?}")),
        }
    }
    tally
}

/// A new connection per request: connect, send, half-close, read the echo, read the server's
/// close. The server closes first, as an HTTP/1.0 server would, so the client's ports do not
/// pile up in TIME_WAIT over a run of tens of thousands of connections.
pub async fn new_conn(addr: SocketAddr, conns: usize, duration: Duration, payload: usize) -> Load {
    let start = Instant::now();
    let deadline = start + duration;
    let mut clients = JoinSet::new();
    for _ in 0..conns {
        clients.spawn(new_conn_client(addr, deadline, payload));
    }
    finish(clients, Tally::default(), conns, duration).await
}

async fn new_conn_client(addr: SocketAddr, deadline: Instant, payload: usize) -> Tally {
    let request = request(payload);
    let mut echo = vec![0u8; payload];
    let mut tally = Tally::default();
    for _ in 0..MAX_REQUESTS {
        if Instant::now() >= deadline {
            break;
        }
        let sent = Instant::now();
        // Which step a failure happened in: "echoed but never closed" and "never echoed" are
        // different bugs.
        let mut step = "connect";
        let exchange = async {
            let mut stream = connect(addr).await?;
            step = "send";
            stream.write_all(&request).await?;
            stream.shutdown().await?;
            step = "echo";
            stream.read_exact(&mut echo).await?;
            let answered = sent.elapsed();
            step = "close after the echo";
            let mut rest = [0u8; 1];
            match stream.read(&mut rest).await? {
                0 => Ok(answered),
                _ => Err(std::io::Error::other("more bytes than were sent")),
            }
        };
        let outcome = timeout(OP_TIMEOUT, exchange).await;
        match outcome {
            Ok(Ok(answered)) if echo == request => tally.record_after(answered, sent, deadline),
            Ok(Ok(_)) => return fail(tally, "echo came back different"),
            // A failed connection is one failed request; the client carries on with a new one,
            // unless the server is plainly gone.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return fail(tally, format!("{step}: {e}"));
            }
            Ok(Err(e)) => tally.fail(format!("{step}: {e}")),
            Err(_) => tally.fail(format!("{step}: nothing within {OP_TIMEOUT:?}")),
        }
    }
    tally
}

impl Tally {
    fn record(&mut self, sent: Instant, deadline: Instant) {
        self.record_after(sent.elapsed(), sent, deadline);
    }

    /// Every completed request counts for latency; only those done by the deadline count for
    /// the rate, which is then divided by exactly the run's length.
    fn record_after(&mut self, latency: Duration, sent: Instant, deadline: Instant) {
        self.hist.record(latency);
        if sent + latency <= deadline {
            self.on_time += 1;
        }
    }
}

fn fail(mut tally: Tally, what: impl Into<String>) -> Tally {
    tally.fail(what);
    tally
}

/// Merge every client's tally into the run's numbers.
async fn finish(mut clients: JoinSet<Tally>, mut total: Tally, conns: usize, duration: Duration) -> Load {
    while let Some(joined) = clients.join_next().await {
        match joined {
            Ok(tally) => {
                total.hist.merge(&tally.hist);
                total.on_time += tally.on_time;
                total.errors += tally.errors;
                total.starved += tally.starved + u64::from(tally.on_time == 0);
                if let Some(e) = tally.first_error {
                    total.first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                total.fail(format!("client task: {e}"));
                total.starved += 1;
            }
        }
    }
    Load {
        rate: total.on_time as f64 / duration.as_secs_f64(),
        p50: total.hist.percentile(50.0),
        p99: total.hist.percentile(99.0),
        errors: total.errors,
        first_error: total.first_error,
        starved: total.starved,
        clients: conns as u64,
    }
}

pub async fn connect(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    // Small request/response exchanges: Nagle would add a delayed-ACK wait to every one.
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A recognisable request, so a wrong echo is caught.
fn request(payload: usize) -> Vec<u8> {
    (0..payload).map(|i| b'a' + (i % 26) as u8).collect()
}
