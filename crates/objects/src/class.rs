//! Classes: what an object is an instance of. Objects are added at run time, but their code is
//! compiled into the server (shipping code is the agents' business); a class makes servants,
//! fresh or from saved state.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warren_rpc::{Dispatch, Interface};

/// A servant and, for a class with state, how to snapshot it.
pub struct Incarnation {
    pub object: Arc<dyn Dispatch>,
    /// The servant's state as bytes, for persistent objects; `None` for a stateless class.
    pub snapshot: Option<Box<dyn Fn() -> Vec<u8> + Send + Sync>>,
}

impl std::fmt::Debug for Incarnation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incarnation").field("interface", &self.object.interface().name).finish()
    }
}

impl Incarnation {
    /// A servant without state to keep.
    pub fn stateless(object: impl Dispatch) -> Self {
        Self { object: Arc::new(object), snapshot: None }
    }
}

/// A kind of object the server can make.
pub trait Class: Send + Sync + 'static {
    /// Its name in `warren objects add --class`.
    fn name(&self) -> &'static str;
    /// One line for `warren objects classes`.
    fn about(&self) -> &'static str;
    fn interface(&self) -> &'static Interface;
    /// A servant: fresh (`None`), or from the state a persistent object saved. Called on
    /// activation (at the first call for objects activated on demand).
    fn incarnate(&self, state: Option<&[u8]>) -> Result<Incarnation, String>;
}

/// What a client learns of a class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassInfo {
    pub name: String,
    pub about: String,
    pub interface: String,
    pub version: u32,
}

/// The classes a server knows, by name.
#[derive(Clone, Default)]
pub struct Classes(BTreeMap<&'static str, Arc<dyn Class>>);

impl std::fmt::Debug for Classes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Classes {
    pub fn with(mut self, class: impl Class) -> Self {
        self.0.insert(class.name(), Arc::new(class));
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Class>> {
        self.0.get(name)
    }

    pub fn info(&self) -> Vec<ClassInfo> {
        self.0
            .values()
            .map(|c| ClassInfo {
                name: c.name().to_owned(),
                about: c.about().to_owned(),
                interface: c.interface().name.to_owned(),
                version: c.interface().version,
            })
            .collect()
    }
}
