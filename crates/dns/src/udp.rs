//! The UDP loop: datagrams in batches, answered in order.
//!
//! Under load the socket holds many queries at once (dnsperf keeps 100 outstanding, a busy
//! resolver as many), so one `recvmmsg` takes up to [`BATCH`] of them and one `sendmmsg` sends
//! their answers: two system calls a batch instead of two a query, which is what separates a
//! server that keeps up from one that does not when the core is shared (NSD batches the same
//! way).
//!
//! A plain A or AAAA query is answered from the answers prepared for its name (`prepared.rs`),
//! written into a buffer the loop keeps for each datagram of a batch; anything else goes to
//! [`answer`]. Each answer then passes the response-rate limiter (`rrl.rs`) of its source
//! prefix.

use std::io::{IoSlice, IoSliceMut};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::answer::{MAX_QUERY, Transport, answer};
use crate::metrics::Dropped;
use crate::prepared::PreparedAnswers;
use crate::rrl::{Limiter, Verdict};
use crate::server::Shared;

/// Datagrams taken per system call.
const BATCH: usize = 32;

pub(crate) async fn serve_udp(socket: UdpSocket, shared: &Shared) {
    // One byte more than the longest query read, so that a longer one is seen as such.
    let mut buffers = vec![vec![0; MAX_QUERY + 1]; BATCH];
    let mut receive_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut send_headers = MultiHeaders::<SockaddrStorage>::preallocate(BATCH, None);
    let mut peers = Vec::with_capacity(BATCH);
    // One response buffer per datagram of a batch, kept from batch to batch.
    let mut responses: Vec<Vec<u8>> = (0..BATCH).map(|_| Vec::with_capacity(512)).collect();
    let mut ready = Vec::with_capacity(BATCH);
    let mut prepared = PreparedAnswers::new(&shared.config);
    let mut limiter = Limiter::new(shared.config.rate_limit);
    loop {
        peers.clear();
        let received = socket.async_io(Interest::READABLE, || {
            let mut slices: Vec<[IoSliceMut<'_>; 1]> = buffers.iter_mut().map(|b| [IoSliceMut::new(b)]).collect();
            let batch = recvmmsg(socket.as_raw_fd(), &mut receive_headers, &mut slices, MsgFlags::MSG_DONTWAIT, None)?;
            peers.extend(batch.map(|message| (message.address, message.bytes)));
            Ok(())
        });
        if let Err(error) = received.await {
            tracing::debug!(%error, "DNS UDP receive");
            continue;
        }
        ready.clear();
        let now = Instant::now();
        for (slot, ((peer, len), buffer)) in peers.iter().zip(&buffers).enumerate() {
            let (Some(peer), Some(source)) = (peer, peer.as_ref().and_then(source_ip)) else { continue };
            let query = &buffer[..*len];
            let response = &mut responses[slot];
            let metrics = &shared.metrics;
            metrics.query(Transport::Udp, query);
            if !prepared.answer(query, &*shared.directory, &shared.rotation, response) {
                match answer(query, &*shared.directory, &shared.config, &shared.rotation, Transport::Udp) {
                    Some(full) => *response = full,
                    None => {
                        metrics.dropped(Dropped::Unanswerable);
                        continue;
                    }
                }
            }
            match limiter.check(source, response, now) {
                Verdict::Send => {}
                Verdict::Slip(truncated) => {
                    metrics.slipped();
                    *response = truncated;
                }
                Verdict::Drop => {
                    metrics.dropped(Dropped::RateLimited);
                    continue;
                }
            }
            metrics.answer(Transport::Udp, response, now.elapsed());
            ready.push((*peer, slot));
        }
        send_all(&socket, &mut send_headers, &ready, &responses).await;
    }
}

/// The address a datagram came from.
fn source_ip(peer: &SockaddrStorage) -> Option<IpAddr> {
    if let Some(v4) = peer.as_sockaddr_in() {
        return Some(IpAddr::V4(v4.ip()));
    }
    peer.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
}

/// Sends the responses `ready` names (peer, index in `responses`), as many per system call as
/// the socket takes.
async fn send_all(
    socket: &UdpSocket,
    headers: &mut MultiHeaders<SockaddrStorage>,
    ready: &[(SockaddrStorage, usize)],
    responses: &[Vec<u8>],
) {
    let mut sent = 0;
    while sent < ready.len() {
        let rest = &ready[sent..];
        let batch = socket.async_io(Interest::WRITABLE, || {
            let slices: Vec<[IoSlice<'_>; 1]> =
                rest.iter().map(|(_, slot)| [IoSlice::new(&responses[*slot])]).collect();
            let peers: Vec<Option<SockaddrStorage>> = rest.iter().map(|(peer, _)| Some(*peer)).collect();
            let results = sendmmsg(socket.as_raw_fd(), headers, &slices, &peers, [], MsgFlags::MSG_DONTWAIT)?;
            Ok(results.count())
        });
        match batch.await {
            Ok(count) => sent += count.max(1),
            // The first datagram was refused (a peer the kernel has no route to, say): skip it
            // and send the others.
            Err(error) => {
                tracing::debug!(%error, "DNS UDP send");
                sent += 1;
            }
        }
    }
}
