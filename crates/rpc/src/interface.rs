//! The server's side of an interface: what it declares ([`Interface`]), how a call reaches the
//! object ([`Dispatch`], which `#[interface]` implements as the skeleton), and what a method
//! knows of its call ([`Context`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::client::{Caller, Target};
use crate::codec::Codec;
use crate::error::{Code, Failure, RpcError};

/// An interface as `#[interface]` declares it.
#[derive(Debug)]
pub struct Interface {
    pub name: &'static str,
    pub version: u32,
    pub methods: &'static [Method],
}

/// One method of an interface.
#[derive(Debug)]
pub struct Method {
    /// Its name on the wire (the Rust name, or the one `#[rpc(name = "…")]` gave it).
    pub name: &'static str,
    /// The version that added it: a caller speaking an older version does not see it.
    pub since: u32,
    /// Declared `#[rpc(idempotent)]`: running it twice is harmless, so clients may hedge and
    /// retry it.
    pub idempotent: bool,
}

impl Interface {
    /// Whether a caller speaking `interface` at `version` may call this object: the same
    /// interface, at this version or an older one (a newer server keeps the old methods).
    pub fn admits(&self, interface: &str, version: u32) -> Result<(), RpcError> {
        if !interface.eq_ignore_ascii_case(self.name) {
            return Err(RpcError::new(
                Code::WrongInterface,
                format!("the object implements {}, not {interface}", self.name),
            ));
        }
        if version > self.version {
            return Err(RpcError::new(
                Code::VersionMismatch,
                format!(
                    "the object implements {} version {}; the call wants version {version}",
                    self.name, self.version
                ),
            ));
        }
        Ok(())
    }

    /// The method named `name` as a caller at `version` sees it.
    pub fn method(&self, name: &str, version: u32) -> Result<&'static Method, RpcError> {
        self.methods.iter().find(|m| m.name == name && m.since <= version).ok_or_else(|| {
            RpcError::new(Code::NoSuchMethod, format!("{} version {version} has no method {name:?}", self.name))
        })
    }
}

/// An object as the server calls it: the skeleton `#[interface]` generates for a servant.
pub trait Dispatch: Send + Sync + 'static {
    fn interface(&self) -> &'static Interface;

    /// Run `method` with `args` (encoded with `codec`); the result or the method's own error
    /// comes back encoded the same way.
    fn dispatch(&self, ctx: &Context, method: &str, codec: Codec, args: &[u8]) -> Result<Vec<u8>, Failure>;
}

/// A reference to a remote object: passed as an argument or returned, it lets the receiver
/// call the object (RMI's remote references).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// Where the object lives (`host:port`); `None` for an object the caller exported on its
    /// own connection (a callback).
    pub addr: Option<String>,
    /// Its name there.
    pub object: String,
    pub interface: String,
    pub version: u32,
}

/// Makes objects that live as long as the server (or its connection) and hands out references
/// to them: the object server's side of [`Context::export`].
pub trait Exporter: Send + Sync {
    fn export(&self, object: Arc<dyn Dispatch>) -> Result<ObjectRef, RpcError>;
}

/// What a method knows of the call it serves.
#[derive(Clone, Default)]
pub struct Context {
    deadline: Option<Instant>,
    cancelled: Arc<AtomicBool>,
    exporter: Option<Arc<dyn Exporter>>,
    back: Option<Caller>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("deadline", &self.deadline).field("cancelled", &self.is_cancelled()).finish()
    }
}

impl Context {
    /// A context for a call due by `deadline`, cancelled when `cancelled` is set.
    pub fn new(deadline: Option<Instant>, cancelled: Arc<AtomicBool>) -> Self {
        Self { deadline, cancelled, exporter: None, back: None }
    }

    /// With `exporter` for [`Context::export`].
    pub fn with_exporter(mut self, exporter: Arc<dyn Exporter>) -> Self {
        self.exporter = Some(exporter);
        self
    }

    /// With `back`, which calls objects the caller exported on its connection.
    pub fn with_callbacks(mut self, back: Caller) -> Self {
        self.back = Some(back);
        self
    }

    /// When the caller stops waiting.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Whether the caller gave up (it cancelled, its deadline passed, or it went away): a long
    /// method checks this and stops early.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Make `object` callable and return a reference to it (RMI's exported remote object: a
    /// method returns a new object, as `getList` returns its enumerator).
    pub fn export(&self, object: Arc<dyn Dispatch>) -> Result<ObjectRef, RpcError> {
        match &self.exporter {
            Some(exporter) => exporter.export(object),
            None => Err(RpcError::new(Code::Internal, "this server cannot export objects")),
        }
    }

    /// A target for the object `reference` names: one the caller exported on its connection
    /// (a callback, such as the course's `WorkListener`).
    pub fn callback(&self, reference: &ObjectRef) -> Result<Target, RpcError> {
        match (&reference.addr, &self.back) {
            (None, Some(back)) => Ok(Target::new(back.clone(), reference.object.clone())),
            (None, None) => Err(RpcError::new(
                Code::Unavailable,
                "no calls back here: the JSON front takes none, and an inline object cannot wait for one",
            )),
            (Some(addr), _) => Err(RpcError::new(
                Code::Unavailable,
                format!("{} lives at {addr}: connect to it instead of calling back", reference.object),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static HELLO: Interface = Interface {
        name: "Hello",
        version: 2,
        methods: &[
            Method { name: "sayHello", since: 1, idempotent: true },
            Method { name: "sayHelloTo", since: 2, idempotent: true },
        ],
    };

    #[test]
    fn older_callers_are_admitted_newer_ones_told_why_not() {
        HELLO.admits("hello", 1).unwrap();
        HELLO.admits("Hello", 2).unwrap();
        let e = HELLO.admits("Hello", 3).unwrap_err();
        assert_eq!(e.code, Code::VersionMismatch);
        assert!(e.message.contains("version 2") && e.message.contains("version 3"), "{e}");
        assert_eq!(HELLO.admits("Bonjour", 1).unwrap_err().code, Code::WrongInterface);
    }

    #[test]
    fn a_method_added_later_is_unknown_to_an_older_caller() {
        assert_eq!(HELLO.method("sayHelloTo", 2).unwrap().name, "sayHelloTo");
        assert_eq!(HELLO.method("sayHelloTo", 1).unwrap_err().code, Code::NoSuchMethod);
        assert_eq!(HELLO.method("nope", 2).unwrap_err().code, Code::NoSuchMethod);
    }

    #[test]
    fn a_passed_deadline_reads_as_cancelled() {
        let ctx = Context::new(Some(Instant::now()), Arc::default());
        assert!(ctx.is_cancelled());
        let flag = Arc::new(AtomicBool::new(false));
        let ctx = Context::new(None, flag.clone());
        assert!(!ctx.is_cancelled());
        flag.store(true, Ordering::Relaxed);
        assert!(ctx.is_cancelled());
    }
}
