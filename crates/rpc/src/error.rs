//! What can go wrong with a call, on both sides: the platform's errors ([`RpcError`], with a
//! [`Code`] any client can branch on) and the method's own, typed by its interface.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a call failed, as the platform sees it. Codes are stable: they travel in both wire
/// formats (snake_case in JSON).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Code {
    /// No object by that name on the server.
    NoSuchObject,
    /// The object implements another interface.
    WrongInterface,
    /// The caller wants a newer version of the interface than the object implements.
    VersionMismatch,
    /// The interface has no such method (in the version the caller named).
    NoSuchMethod,
    /// The arguments could not be decoded as the method's parameters.
    BadArguments,
    /// The deadline passed before an answer.
    DeadlineExceeded,
    /// The caller gave up.
    Cancelled,
    /// The object's queue is full (load shedding): try later or elsewhere.
    Overloaded,
    /// The persistent state changed under the call (optimistic concurrency): retry.
    Conflict,
    /// The connection or the server is gone; the call may or may not have run.
    Unavailable,
    /// A credential is missing or wrong.
    Unauthenticated,
    /// The credential does not allow this.
    PermissionDenied,
    /// The peer broke the protocol (a malformed frame, an answer to no call).
    Protocol,
    /// The server failed (a panic in the method, a store error).
    Internal,
}

impl Code {
    /// Whether a call that failed so never ran: safe to send again, idempotent or not.
    pub fn never_ran(self) -> bool {
        matches!(
            self,
            Code::NoSuchObject
                | Code::WrongInterface
                | Code::VersionMismatch
                | Code::NoSuchMethod
                | Code::BadArguments
                | Code::Overloaded
                | Code::Unauthenticated
                | Code::PermissionDenied
        )
    }

    /// The status an HTTP client gets for it.
    pub fn http_status(self) -> u16 {
        match self {
            Code::NoSuchObject | Code::NoSuchMethod => 404,
            Code::WrongInterface | Code::VersionMismatch | Code::Conflict => 409,
            Code::BadArguments | Code::Protocol => 400,
            Code::DeadlineExceeded => 504,
            Code::Cancelled => 499,
            Code::Overloaded | Code::Unavailable => 503,
            Code::Unauthenticated => 401,
            Code::PermissionDenied => 403,
            Code::Internal => 500,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Code::NoSuchObject => "no_such_object",
            Code::WrongInterface => "wrong_interface",
            Code::VersionMismatch => "version_mismatch",
            Code::NoSuchMethod => "no_such_method",
            Code::BadArguments => "bad_arguments",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::Cancelled => "cancelled",
            Code::Overloaded => "overloaded",
            Code::Conflict => "conflict",
            Code::Unavailable => "unavailable",
            Code::Unauthenticated => "unauthenticated",
            Code::PermissionDenied => "permission_denied",
            Code::Protocol => "protocol",
            Code::Internal => "internal",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A platform error: its code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct RpcError {
    pub code: Code,
    pub message: String,
}

impl RpcError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

/// How a call failed before the stub decodes it: a platform error, or the method's own error
/// still encoded (the stub decodes it into the interface's error type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    Rpc(RpcError),
    App(Vec<u8>),
}

impl From<RpcError> for Failure {
    fn from(e: RpcError) -> Self {
        Failure::Rpc(e)
    }
}

impl Failure {
    /// The platform code; `None` for the method's own error.
    pub fn code(&self) -> Option<Code> {
        match self {
            Failure::Rpc(e) => Some(e.code),
            Failure::App(_) => None,
        }
    }
}

/// What a stub's method returns on failure: the method's own error `E`, typed, or the
/// platform's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    #[error("the method failed: {0:?}")]
    App(E),
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

impl<E> CallError<E> {
    /// The platform code; `None` for the method's own error.
    pub fn code(&self) -> Option<Code> {
        match self {
            CallError::App(_) => None,
            CallError::Rpc(e) => Some(e.code),
        }
    }
}

/// The error type of a method that cannot fail in its own terms: it has no values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Never {}

impl fmt::Display for Never {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {}
    }
}
