//! The server's own object, `warren.objects`: what `warren objects add|rm|ls|classes` call.
//! Adding and removing change the server, so they take the admin token; listing does not.

use std::sync::{Arc, Weak};

use sha2::{Digest, Sha256};
use warren_rpc::{Code, RpcError, interface};

use crate::class::ClassInfo;
use crate::table::{ObjectInfo, ObjectSpec, Objects};

/// The admin object's name.
pub const ADMIN_OBJECT: &str = "warren.objects";

#[interface(name = "ObjectAdmin", version = 1)]
pub trait ObjectAdmin: Send + Sync + 'static {
    fn add(&self, token: String, spec: ObjectSpec) -> Result<ObjectInfo, RpcError>;
    fn rm(&self, token: String, name: String) -> Result<ObjectInfo, RpcError>;
    #[rpc(idempotent)]
    fn ls(&self) -> Vec<ObjectInfo>;
    #[rpc(idempotent)]
    fn classes(&self) -> Vec<ClassInfo>;
}

/// The admin servant: the table it changes and the token's hash (hashes are compared, so the
/// comparison's time tells nothing of the token).
pub struct Admin {
    objects: Weak<Objects>,
    token: Option<[u8; 32]>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("token", &self.token.is_some()).finish()
    }
}

impl Admin {
    /// Install the admin object in `objects`; `token` `None` refuses every change.
    pub fn install(objects: &Arc<Objects>, token: Option<&str>) -> Result<(), RpcError> {
        let admin = Admin { objects: Arc::downgrade(objects), token: token.map(hash) };
        objects.install(ADMIN_OBJECT, crate::Policy::default(), Arc::new(ObjectAdminSkeleton(admin)))
    }

    fn authorize(&self, token: &str) -> Result<Arc<Objects>, RpcError> {
        match self.token {
            None => return Err(RpcError::new(Code::PermissionDenied, "this server takes no changes (no admin token)")),
            Some(want) if want != hash(token) => {
                return Err(RpcError::new(Code::Unauthenticated, "wrong admin token"));
            }
            Some(_) => {}
        }
        self.objects.upgrade().ok_or_else(|| RpcError::new(Code::Unavailable, "the server is stopping"))
    }
}

/// The SHA-256 of a token: tokens are kept and compared as their hashes.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl ObjectAdmin for Admin {
    fn add(&self, token: String, spec: ObjectSpec) -> Result<ObjectInfo, RpcError> {
        self.authorize(&token)?.add(&spec)
    }

    fn rm(&self, token: String, name: String) -> Result<ObjectInfo, RpcError> {
        self.authorize(&token)?.remove(&name)
    }

    fn ls(&self) -> Vec<ObjectInfo> {
        self.objects.upgrade().map(|o| o.list()).unwrap_or_default()
    }

    fn classes(&self) -> Vec<ClassInfo> {
        self.objects.upgrade().map(|o| o.classes().info()).unwrap_or_default()
    }
}
