//! Global references: a resource that stays on its origin host while the agent that holds it
//! moves on. When an agent leaves with a reference, the origin issues an unguessable token for
//! that one resource ([`References::issue`]) and the token travels in the snapshot; wherever
//! the agent is, its host function calls go back to the origin over the agent protocol
//! ([`call`]: one bounded frame each way), and the origin serves only tokens it issued
//! ([`References::serve`]), with the access it issued them for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Host;
use crate::binding::Reference;
use crate::caps::MAX_FILE_READ;
use crate::wire::{Request, Response};

/// The most references a host keeps issued; past it an agent leaving with one more stays.
pub const MAX_REFERENCES: usize = 4096;

/// How long one call through a reference may take, connecting included.
pub const CALL_WITHIN: Duration = Duration::from_secs(5);

/// A host function's call on a resource held through a reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `kv_get(key)`.
    KvGet(Vec<u8>),
    /// `kv_put(key, value)`.
    KvPut(Vec<u8>, Vec<u8>),
    /// `kv_delete(key)`.
    KvDelete(Vec<u8>),
    /// `file_size()`.
    FileSize,
    /// `file_read(offset, len)`.
    FileRead(u64, u32),
}

/// The origin's answer to a [`Call`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// A value, or none.
    Value(Option<Vec<u8>>),
    /// What `kv_put` or `kv_delete` returns.
    Code(i32),
    /// A file's size.
    Size(u64),
    /// Bytes read.
    Bytes(Vec<u8>),
}

/// What a token was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A bucket of this host, read-only or read-write.
    Kv {
        /// Its name.
        bucket: String,
        /// Whether calls may change it.
        write: bool,
    },
    /// A file this host offers.
    File(String),
}

/// The references a host has issued.
#[derive(Debug, Default)]
pub struct References {
    issued: Mutex<HashMap<[u8; 32], Target>>,
}

impl References {
    /// A new token for `target`.
    pub fn issue(&self, target: Target) -> Result<[u8; 32], String> {
        let mut token = [0; 32];
        getrandom::fill(&mut token).map_err(|error| format!("no randomness for a reference: {error}"))?;
        let mut issued = self.lock();
        if issued.len() >= MAX_REFERENCES {
            return Err(format!("this host already holds its maximum of {MAX_REFERENCES} references"));
        }
        issued.insert(token, target);
        Ok(token)
    }

    /// Forgets `token` (the agent it was issued for did not leave).
    pub fn revoke(&self, token: &[u8; 32]) {
        self.lock().remove(token);
    }

    /// How many are issued.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Target>> {
        // Each change is one map call, so a poisoned lock still guards a whole table.
        self.issued.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers `call` on the resource `token` was issued for, if this host issued it.
    pub fn serve(&self, host: &Host, token: &[u8; 32], call: Call) -> Response {
        let Some(target) = self.lock().get(token).cloned() else {
            return Response::Refused("no such reference: this host serves only the references it issued".into());
        };
        let answer = match (target, call) {
            (Target::Kv { bucket, .. }, Call::KvGet(key)) => Answer::Value(host.kv().get(&bucket, &key)),
            (Target::Kv { bucket, write: true }, Call::KvPut(key, value)) => {
                Answer::Code(host.kv().put(&bucket, &key, &value).map_or_else(|refusal| refusal.code(), |()| 0))
            }
            (Target::Kv { bucket, write: true }, Call::KvDelete(key)) => {
                Answer::Code(host.kv().delete(&bucket, &key) as i32)
            }
            (Target::File(name), call @ (Call::FileSize | Call::FileRead(..))) => {
                let Some(path) = host.config().offers.files.get(&name) else {
                    return Response::Refused(format!("this host no longer offers the file {name:?}"));
                };
                let done = match call {
                    Call::FileRead(offset, len) => {
                        crate::file::read_at(path, offset, (len as usize).min(MAX_FILE_READ)).map(Answer::Bytes)
                    }
                    _ => crate::file::size(path).map(Answer::Size),
                };
                match done {
                    Ok(answer) => answer,
                    Err(reason) => return Response::Refused(reason),
                }
            }
            (Target::Kv { .. }, Call::KvPut(..) | Call::KvDelete(..)) => {
                return Response::Refused("the reference is read-only".into());
            }
            _ => return Response::Refused("the reference is for another kind of resource".into()),
        };
        Response::Answer(answer)
    }
}

/// Makes `call` on the origin of `at`.
pub(crate) fn call(at: &Reference, call: Call) -> Result<Answer, String> {
    let addr: SocketAddr =
        at.origin.parse().map_err(|_| format!("the reference's origin {:?} is not ADDR:PORT", at.origin))?;
    let request = Request::Reference { token: at.token, call };
    match crate::client::ask(addr, &request, CALL_WITHIN) {
        Ok(Response::Answer(answer)) => Ok(answer),
        Ok(Response::Refused(reason)) => Err(format!("the origin {addr} refused the call: {reason}")),
        Ok(_) => Err(format!("the origin {addr} answered something else")),
        Err(reason) => Err(format!("the origin cannot be reached: {reason}")),
    }
}

pub(crate) fn unexpected(at: &Reference, answer: &Answer) -> String {
    format!("the origin {} answered {answer:?}, not what was asked", at.origin)
}
