//! One DNS question over UDP and the A records of its answer, enough to tell whether an answer
//! carries every address of a name (dig per query would cost a process each time).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;

/// How long one query may wait for its answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The A records answering `name` at `server`, or why there are none (no answer, TC, an error).
pub async fn query_a(server: SocketAddr, name: &str, id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
    socket.send_to(&question(name, id), server).await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(ANSWER_WITHIN, socket.recv_from(&mut buf))
        .await
        .map_err(|_| format!("no answer within {ANSWER_WITHIN:?}"))?
        .map_err(|e| e.to_string())?;
    a_records(&buf[..n], id)
}

/// A query for `name` (dotted, absolute or not), type A, class IN, recursion not asked.
fn question(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn a_records(msg: &[u8], id: u16) -> Result<Vec<Ipv4Addr>, String> {
    let word = |at: usize| msg.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or("short answer");
    if word(0)? != id {
        return Err("an answer to another query".into());
    }
    let flags = word(2)?;
    if flags & 0x000f != 0 {
        return Err(format!("rcode {}", flags & 0x000f));
    }
    if flags & 0x0200 != 0 {
        return Err("truncated (TC)".into());
    }
    let (questions, answers) = (word(4)?, word(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let (kind, len) = (word(at)?, word(at + 8)? as usize);
        let data = msg.get(at + 10..at + 10 + len).ok_or("short record")?;
        if kind == 1 && len == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    Ok(found)
}

/// The offset after the name at `at` (labels, ending in a root label or a compression pointer).
fn skip_name(msg: &[u8], mut at: usize) -> Result<usize, String> {
    loop {
        let len = *msg.get(at).ok_or("short name")?;
        match len {
            0 => return Ok(at + 1),
            l if l & 0xc0 == 0xc0 => return Ok(at + 2),
            l => at += 1 + l as usize,
        }
    }
}
