//! The agent protocol: a client ships a module, its signature, an entry, its arguments and
//! input, and gets the outcome (remote evaluation); or it fetches a module the host holds, by
//! id, to run it itself (code on demand). One request and one response per frame,
//! framed by `warren_proto::frame` and encoded with postcard; a connection may carry requests
//! one after another. docs/protocols.md gives it byte by byte.

use serde::{Deserialize, Serialize};
use warren_proto::frame::Framing;

use crate::{Grants, ModuleSignature, Outcome};

/// Frames start with `A6 01` (agents, version 1); a body is at most 24 MiB, room for the
/// largest module a host admits by default and its input.
pub const FRAMING: Framing = Framing { prefix: &[0xA6, 0x01], max: 24 << 20 };

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Load a module (if the host has not already) and run one entry of it.
    Run(RunRequest),
    /// Send the bytes of the module with this id (its SHA-256), if the host holds it.
    Fetch([u8; 32]),
}

/// A module to run, with everything it starts with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRequest {
    /// The module's bytes.
    pub module: Vec<u8>,
    /// Its signature: the signer's 32-byte public key and the 64-byte signature.
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
    /// The exported function to call.
    pub entry: String,
    /// Its arguments as text, parsed by the host with the entry's parameter types.
    pub args: Vec<String>,
    /// Bytes the agent reads with `input_read`.
    pub input: Vec<u8>,
    /// The capabilities asked for: `clock` and `log` only (`kv` is local to a host).
    pub clock: bool,
    /// See `clock`.
    pub log: bool,
}

impl RunRequest {
    /// The signature, if it has the right lengths.
    pub fn signature(&self) -> Result<Option<ModuleSignature>, String> {
        let Some((key, signature)) = &self.signature else { return Ok(None) };
        let key = key.as_slice().try_into().map_err(|_| format!("a public key is 32 bytes, not {}", key.len()))?;
        let signature =
            signature.as_slice().try_into().map_err(|_| format!("a signature is 64 bytes, not {}", signature.len()))?;
        Ok(Some(ModuleSignature { key, signature }))
    }

    /// The grants asked for.
    pub fn grants(&self) -> Grants {
        Grants { clock: self.clock, log: self.log, kv: None }
    }
}

/// What the host answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// The agent ran to its end.
    Done(Outcome),
    /// It was refused or stopped: the reason, as the host's error says it.
    Refused(String),
    /// The bytes of the module fetched.
    Module(Vec<u8>),
}

/// `message` as one frame.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let body = postcard::to_stdvec(message).expect("postcard encodes every message type");
    let mut out = Vec::with_capacity(FRAMING.header() + body.len());
    // Requests and responses larger than a frame are cut by the host's own limits first:
    // modules and output are both bounded below `FRAMING.max`.
    if FRAMING.encode(&body, &mut out).is_err() {
        let refused = postcard::to_stdvec(&Response::Refused("the answer is larger than a frame".into()))
            .expect("postcard encodes every message type");
        FRAMING.encode(&refused, &mut out).expect("a short refusal fits a frame");
    }
    out
}
