//! The agent protocol: a client ships a module, its signature, an entry, its arguments and
//! input, and gets the outcome (remote evaluation); or it fetches a module the host holds, by
//! id, to run it itself (code on demand). One request and one response per frame,
//! framed by `warren_proto::frame` and encoded with postcard; a connection may carry requests
//! one after another. docs/protocols.md gives it byte by byte.

use serde::{Deserialize, Serialize};
use warren_proto::frame::Framing;

use crate::binding::{Bind, Binding, Overrides};
use crate::caps::{Access, FileGrant, KvGrant};
use crate::reference::{Answer, Call};
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
    /// Start a module as an agent that may move: answered at once with its id on this host.
    Start(RunRequest),
    /// A frozen agent arriving from another node: resume it here.
    Arrive(Arrival),
    /// Wait (a while) for agent `id` of this host to end or leave.
    Wait(u64),
    /// Move or clone a running agent of this host: it freezes at its next safe point.
    Order(Order),
    /// List the agents this host holds.
    List,
    /// A call through a global reference this host issued, from wherever its agent is now.
    Reference {
        /// The token the reference carries.
        token: [u8; 32],
        /// The host function's call.
        call: Call,
    },
    /// A piece of a snapshot too large for one frame, staged until its [`Request::ArriveParts`].
    Part(Part),
    /// A frozen agent whose snapshot came before it in parts: `arrival.snapshot` is empty, and
    /// the parts staged under `upload` are the snapshot.
    ArriveParts {
        /// The upload the parts were sent under.
        upload: u64,
        /// Everything else of the arrival.
        arrival: Arrival,
    },
}

/// The most bytes of a snapshot one [`Part`] carries, well inside a frame.
pub const PART: usize = 8 << 20;

/// One piece of a large snapshot, in order: the pieces of an upload follow one another with no
/// gap, and the first says how long the whole is, so a host refuses one over its limit before
/// it holds any of it. The whole is checked by its SHA-256 when it is decoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The sender's name for this upload, unique among its uploads in flight.
    pub upload: u64,
    /// The whole snapshot's length.
    pub total: u64,
    /// Where these bytes start in it.
    pub offset: u64,
    /// At most [`PART`] bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// A snapshot sent to another node, with what it needs to admit the code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arrival {
    /// The snapshot, as [`crate::Snapshot::encode`] sealed it.
    #[serde(with = "serde_bytes")]
    pub snapshot: Vec<u8>,
    /// The original module's bytes; absent when the sender hopes the receiver has them (it
    /// answers [`Response::NeedModule`] if it does not).
    pub module: Option<Vec<u8>>,
    /// The module's signature, checked as for a run.
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
    /// Whether this copy is a clone (`migrate` returns 1 to it) rather than the agent itself.
    pub clone: bool,
}

/// An order from outside: move agent `id` to `dest`, or clone it there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    /// The agent, by its id on the host that gets the order.
    pub id: u64,
    /// Where it goes: `ADDR:PORT`.
    pub dest: String,
    /// Send a copy and keep the agent running here.
    pub clone: bool,
    /// The signer's key and signature over [`crate::trust::order_message_bound`].
    pub signature: Option<(Vec<u8>, Vec<u8>)>,
    /// The actions asked for the agent's resources on this move, instead of its own.
    pub bind: Overrides,
}

/// How far an agent got, as [`Request::Wait`] answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum End {
    /// Still here (running, or being moved) when the wait ran out: ask again.
    Running,
    /// It returned from its entry here.
    Finished(Outcome),
    /// It was stopped or refused here.
    Failed(String),
    /// It left: it is agent `id` at `to` now.
    Moved {
        /// The node it went to.
        to: String,
        /// Its id there.
        id: u64,
    },
}

/// One line of [`Response::Agents`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its id on this host.
    pub id: u64,
    /// Its module's id.
    pub module: [u8; 32],
    /// How many times it has moved (or been frozen) so far.
    pub hops: u32,
    /// `running`, `moving to …`, `moved to ID@ADDR`, `finished`, `failed: …`.
    pub state: String,
    /// Fuel it has burnt, across hops, as of its last freeze or its end.
    pub fuel_used: u64,
}

/// A signature as it travels: the key and the signature, checked for their lengths.
pub fn signature_of(signature: &Option<(Vec<u8>, Vec<u8>)>) -> Result<Option<ModuleSignature>, String> {
    let Some((key, signature)) = signature else { return Ok(None) };
    let key = key.as_slice().try_into().map_err(|_| format!("a public key is 32 bytes, not {}", key.len()))?;
    let signature =
        signature.as_slice().try_into().map_err(|_| format!("a signature is 64 bytes, not {}", signature.len()))?;
    Ok(Some(ModuleSignature { key, signature }))
}

/// A signature ready to travel.
pub fn signature_to(signature: Option<&ModuleSignature>) -> Option<(Vec<u8>, Vec<u8>)> {
    signature.map(|s| (s.key.to_vec(), s.signature.to_vec()))
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
    /// The capabilities asked for: the clock, the log, a bucket and a file the host offers.
    pub clock: bool,
    /// See `clock`.
    pub log: bool,
    /// A bucket of those the host offers, by name.
    pub kv: Option<KvAsk>,
    /// A file of those the host offers, by name.
    pub file: Option<FileAsk>,
    /// The actions the agent asks for its resources when it moves, instead of the defaults.
    pub bind: Overrides,
}

/// A bucket asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvAsk {
    /// Its name, one the host offers.
    pub bucket: String,
    /// Read-write rather than read-only.
    pub write: bool,
    /// How the agent is bound to it.
    pub binding: Binding,
}

/// A file asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileAsk {
    /// Its name, one the host offers.
    pub name: String,
    /// How the agent is bound to it.
    pub binding: Binding,
}

impl RunRequest {
    /// The signature, if it has the right lengths.
    pub fn signature(&self) -> Result<Option<ModuleSignature>, String> {
        signature_of(&self.signature)
    }

    /// The grants asked for.
    pub fn grants(&self) -> Grants {
        let access = |write| if write { Access::ReadWrite } else { Access::Read };
        Grants {
            clock: self.clock,
            log: self.log,
            kv: self.kv.as_ref().map(|kv| KvGrant { bucket: kv.bucket.clone(), access: access(kv.write) }),
            kv_bind: Bind { binding: self.kv.as_ref().map(|kv| kv.binding).unwrap_or_default(), action: self.bind.kv },
            file: self.file.as_ref().map(|file| FileGrant {
                name: file.name.clone(),
                bind: Bind { binding: file.binding, action: self.bind.file },
            }),
        }
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
    /// The agent started (or arrived) here with this id.
    Started(u64),
    /// An arrival without the module's bytes, which this host does not have: send them.
    NeedModule,
    /// What a wait saw.
    Ended(End),
    /// The order was taken: the agent freezes at its next safe point.
    Ordered,
    /// The agents this host holds.
    Agents(Vec<AgentInfo>),
    /// The answer to a call through a global reference.
    Answer(Answer),
    /// A part was staged: this many bytes of its upload are here.
    Staged(u64),
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

/// `message` as one frame, or its body's length if that is more than a frame carries.
pub fn try_encode<T: Serialize>(message: &T) -> Result<Vec<u8>, usize> {
    let body = postcard::to_stdvec(message).expect("postcard encodes every message type");
    let mut out = Vec::with_capacity(FRAMING.header() + body.len());
    FRAMING.encode(&body, &mut out).map_err(|_| body.len())?;
    Ok(out)
}
