//! Preparing a module for strong mobility: the checks that make its whole state capturable,
//! its initial memory image (to tell dirty pages from the rest), and Binaryen's Asyncify
//! transform, which lets `warren.migrate` unwind the call stack into linear memory and rewind
//! it on another host.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::process::{Command, Stdio};
use std::sync::Arc;

use wasmparser::{DataKind, ExternalKind, Operator, Parser, Payload, TypeRef};

use crate::ModuleId;

/// The program that applies Asyncify: Binaryen's optimizer (Debian's `binaryen`).
pub const WASM_OPT: &str = "wasm-opt";

/// `wasm-opt`'s arguments: Asyncify around `warren.migrate` only (no other import unwinds, so
/// calls to them stay uninstrumented), then `-O2`, which removes most of what Asyncify adds to
/// code that cannot reach `migrate`. The features are those wasmtime enables, so the optimizer
/// neither refuses a module the host runs nor emits one it does not.
const ASYNCIFY: &[&str] = &[
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-bulk-memory",
    "--enable-multivalue",
    "--enable-reference-types",
    "--enable-simd",
    "--asyncify",
    "--pass-arg=asyncify-imports@warren.migrate",
    "-O2",
];

/// The unit of a snapshot's memory: 4 KiB, so a few changed bytes cost 4 KiB, not 64.
pub const PAGE: usize = 4096;

/// A WebAssembly page, the unit memory grows by.
pub const WASM_PAGE: usize = 65536;

/// Why a module cannot move with its execution state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrepareError {
    /// Not admitted or not valid (as [`crate::Host::load`] says).
    #[error(transparent)]
    Load(#[from] crate::LoadError),
    /// `wasm-opt` is missing or failed.
    #[error("Asyncify (wasm-opt) failed: {0}")]
    Asyncify(String),
    /// The module breaks the contract of a mobile module (docs/agents.md, "Strong mobility").
    #[error("the module cannot move with its state: {0}")]
    Unfit(String),
}

/// A module ready to move: the original's id, the id of its Asyncify-transformed code (which
/// a snapshot names too, since Asyncify's call indexes are positions in that code), the
/// compiled transformed module and the initial image of its memory.
#[derive(Debug)]
pub struct Prepared {
    pub(crate) original: ModuleId,
    pub(crate) id: ModuleId,
    pub(crate) module: wasmtime::Module,
    pub(crate) image: Image,
    pub(crate) sizes: (usize, usize),
}

/// What a caller learns of a prepared module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MobileModule {
    /// The original module's id, which jobs and snapshots name.
    pub module: ModuleId,
    /// The id of its transformed code on this host.
    pub prepared: ModuleId,
    /// Its size in bytes before the transform.
    pub bytes: usize,
    /// Its size after.
    pub prepared_bytes: usize,
}

impl Prepared {
    pub(crate) fn describe(&self) -> MobileModule {
        MobileModule { module: self.original, prepared: self.id, bytes: self.sizes.0, prepared_bytes: self.sizes.1 }
    }
}

/// The memory a fresh instance starts with: the [`PAGE`]s its data segments write, by index;
/// every other page starts zeroed.
#[derive(Debug, Default)]
pub struct Image {
    pages: BTreeMap<u32, Box<[u8]>>,
}

static ZERO: [u8; PAGE] = [0; PAGE];

impl Image {
    /// Page `index` of the initial memory.
    pub fn page(&self, index: u32) -> &[u8] {
        self.pages.get(&index).map_or(&ZERO[..], |page| page)
    }
}

/// Checks that `bytes` keeps all its state where a snapshot can read it, and returns its
/// initial memory image.
pub(crate) fn check(bytes: &[u8]) -> Result<Image, PrepareError> {
    let unfit = PrepareError::Unfit;
    let invalid = |error: wasmparser::BinaryReaderError| unfit(format!("unreadable: {error}"));
    let mut imported_globals = 0;
    let mut mutable = Vec::new();
    let mut exported_globals = Vec::new();
    let mut memory_exported = false;
    let mut migrate_imported = false;
    let mut initial_bytes = 0u64;
    let mut image = Image::default();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::StartSection { .. } => {
                // A start function would run again on every host the agent reaches.
                return Err(unfit("it has a start function, which would run again at each hop".into()));
            }
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(invalid)?;
                    match import.ty {
                        TypeRef::Global(_) => imported_globals += 1,
                        TypeRef::Func(_) if (import.module, import.name) == ("warren", "migrate") => {
                            migrate_imported = true;
                        }
                        _ => {}
                    }
                }
            }
            Payload::MemorySection(memories) => {
                for memory in memories {
                    let memory = memory.map_err(invalid)?;
                    if memory.memory64 || memory.shared {
                        return Err(unfit("its memory is 64-bit or shared".into()));
                    }
                    initial_bytes = memory.initial * WASM_PAGE as u64;
                }
            }
            Payload::GlobalSection(globals) => {
                for (at, global) in globals.into_iter().enumerate() {
                    if global.map_err(invalid)?.ty.mutable {
                        mutable.push(imported_globals + at as u32);
                    }
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(invalid)?;
                    match export.kind {
                        ExternalKind::Global => exported_globals.push(export.index),
                        ExternalKind::Memory => memory_exported |= export.name == "memory",
                        _ => {}
                    }
                }
            }
            Payload::DataSection(data) => {
                for segment in data {
                    let segment = segment.map_err(invalid)?;
                    let DataKind::Active { offset_expr, .. } = segment.kind else { continue };
                    let mut offset = offset_expr.get_operators_reader();
                    let (Ok(Operator::I32Const { value }), Ok(Operator::End)) = (offset.read(), offset.read()) else {
                        return Err(unfit("a data segment's offset is not a constant".into()));
                    };
                    image.write(value as u32 as u64, segment.data, initial_bytes)?;
                }
            }
            Payload::CodeSectionEntry(body) => {
                let mut operators = body.get_operators_reader().map_err(invalid)?;
                while !operators.eof() {
                    // Tables are rebuilt from element segments on arrival, and dropped segments
                    // come back: code that changes either could not be resumed faithfully.
                    match operators.read().map_err(invalid)? {
                        Operator::TableSet { .. }
                        | Operator::TableGrow { .. }
                        | Operator::TableFill { .. }
                        | Operator::TableCopy { .. }
                        | Operator::TableInit { .. }
                        | Operator::ElemDrop { .. }
                        | Operator::DataDrop { .. } => {
                            return Err(unfit("its code changes a table or drops a segment".into()));
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !migrate_imported {
        return Err(unfit("it does not import warren.migrate, so it has no safe point".into()));
    }
    if !memory_exported {
        return Err(unfit("it exports no memory named \"memory\"".into()));
    }
    if let Some(global) = mutable.iter().find(|global| !exported_globals.contains(global)) {
        return Err(unfit(format!("its mutable global {global} is not exported, so a snapshot could not read it")));
    }
    Ok(image)
}

impl Image {
    fn write(&mut self, offset: u64, data: &[u8], size: u64) -> Result<(), PrepareError> {
        if offset + data.len() as u64 > size {
            return Err(PrepareError::Unfit("a data segment lies outside the initial memory".into()));
        }
        let (mut address, mut rest) = (offset as usize, data);
        while !rest.is_empty() {
            let at = address % PAGE;
            let n = (PAGE - at).min(rest.len());
            let page = self.pages.entry((address / PAGE) as u32).or_insert_with(|| ZERO.into());
            page[at..at + n].copy_from_slice(&rest[..n]);
            (address, rest) = (address + n, &rest[n..]);
        }
        Ok(())
    }
}

/// `bytes` with Asyncify applied by [`WASM_OPT`].
pub(crate) fn asyncify(bytes: &[u8]) -> Result<Vec<u8>, PrepareError> {
    let failed = PrepareError::Asyncify;
    // Through a file of its own: Binaryen 108 reads neither `-` nor a pipe as its input.
    let dir = tempfile::tempdir().map_err(|error| failed(format!("a directory for its input: {error}")))?;
    let input = dir.path().join("module.wasm");
    std::fs::write(&input, bytes).map_err(|error| failed(format!("writing its input: {error}")))?;
    let output = Command::new(WASM_OPT)
        .args(ASYNCIFY)
        .arg(&input)
        .args(["-o", "-"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| failed(format!("cannot run {WASM_OPT} (Debian's binaryen package): {error}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rfind(|line| !line.trim().is_empty()).unwrap_or("no message");
        return Err(failed(format!("{} ({last})", output.status)));
    }
    Ok(output.stdout)
}

/// Prepared modules by original id, at most `max` of them; the oldest is forgotten first.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    prepared: HashMap<ModuleId, Arc<Prepared>>,
    order: VecDeque<ModuleId>,
}

impl Cache {
    pub(crate) fn get(&self, original: &ModuleId) -> Option<Arc<Prepared>> {
        self.prepared.get(original).cloned()
    }

    pub(crate) fn insert(&mut self, prepared: Arc<Prepared>, max: usize) -> Arc<Prepared> {
        if let Some(already) = self.get(&prepared.original) {
            return already;
        }
        while self.prepared.len() >= max.max(1) {
            let Some(oldest) = self.order.pop_front() else { break };
            self.prepared.remove(&oldest);
        }
        self.order.push_back(prepared.original);
        self.prepared.insert(prepared.original, prepared.clone());
        prepared
    }
}
