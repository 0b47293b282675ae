//! What one agent may use: CPU as wasmtime fuel, wall time as epoch ticks, memory and table
//! sizes through a [`ResourceLimiter`], and bounded output and log. A host also has a ceiling,
//! so a caller cannot ask for more than the operator allows.

use std::time::Duration;

use wasmtime::{ResourceLimiter, Result};

/// One agent's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Fuel (about one unit per WebAssembly instruction); out of fuel stops the agent.
    pub fuel: u64,
    /// Wall time from instantiation; measured in the host's epoch ticks, so it is at most one
    /// tick ([`crate::EPOCH_TICK`]) late.
    pub wall: Duration,
    /// Bytes of linear memory.
    pub memory: usize,
    /// Elements of its table.
    pub table: usize,
    /// Bytes it may write to its output.
    pub output: usize,
    /// Lines it may log (each cut at [`crate::MAX_LOG_LINE`] bytes); later lines are counted,
    /// not kept.
    pub log_lines: usize,
}

impl Default for Limits {
    /// A second of wall time, a billion fuel, 64 MiB of memory, a 10,000-element table, 1 MiB
    /// of output and 256 log lines.
    fn default() -> Limits {
        Limits {
            fuel: 1_000_000_000,
            wall: Duration::from_secs(1),
            memory: 64 << 20,
            table: 10_000,
            output: 1 << 20,
            log_lines: 256,
        }
    }
}

impl Limits {
    /// The first limit in `self` above `ceiling`, by name.
    pub fn above(&self, ceiling: &Limits) -> Option<&'static str> {
        [
            ("fuel", self.fuel > ceiling.fuel),
            ("wall", self.wall > ceiling.wall),
            ("memory", self.memory > ceiling.memory),
            ("table", self.table > ceiling.table),
            ("output", self.output > ceiling.output),
            ("log_lines", self.log_lines > ceiling.log_lines),
        ]
        .into_iter()
        .find_map(|(name, above)| above.then_some(name))
    }
}

/// A growth the [`Budget`] refused, remembered so that the trap that usually follows (an
/// allocator that finds no memory aborts) is reported as the limit, not as a bare trap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Memory would have grown to `wanted` bytes.
    Memory {
        /// The bytes asked for.
        wanted: usize,
    },
    /// The table would have grown to `wanted` elements.
    Table {
        /// The elements asked for.
        wanted: usize,
    },
    /// Its output would have grown to `wanted` bytes.
    Output {
        /// The bytes its output would have held.
        wanted: usize,
    },
}

/// The memory and table limits of one store. A refused growth makes `memory.grow` return -1,
/// as the WebAssembly spec lets it, so a guest may recover; the refusal is kept for the report.
#[derive(Debug)]
pub struct Budget {
    memory: usize,
    table: usize,
    /// The last growth refused.
    pub refused: Option<Refusal>,
}

impl Budget {
    /// The budget of `limits`.
    pub fn new(limits: &Limits) -> Budget {
        Budget { memory: limits.memory, table: limits.table, refused: None }
    }
}

impl ResourceLimiter for Budget {
    fn memory_growing(&mut self, _current: usize, wanted: usize, maximum: Option<usize>) -> Result<bool> {
        let allowed = wanted <= self.memory && maximum.is_none_or(|maximum| wanted <= maximum);
        if !allowed {
            self.refused = Some(Refusal::Memory { wanted });
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, _current: usize, wanted: usize, maximum: Option<usize>) -> Result<bool> {
        let allowed = wanted <= self.table && maximum.is_none_or(|maximum| wanted <= maximum);
        if !allowed {
            self.refused = Some(Refusal::Table { wanted });
        }
        Ok(allowed)
    }

    // One module, one memory, one table: an agent is one instance.
    fn instances(&self) -> usize {
        1
    }

    fn memories(&self) -> usize {
        1
    }

    fn tables(&self) -> usize {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn above_names_the_first_limit_over_the_ceiling() {
        let ceiling = Limits::default();
        assert_eq!(ceiling.above(&ceiling), None);
        let greedy = Limits { memory: ceiling.memory + 1, ..ceiling };
        assert_eq!(greedy.above(&ceiling), Some("memory"));
    }

    #[test]
    fn the_budget_refuses_growth_past_its_limit_and_remembers_it() {
        let mut budget = Budget::new(&Limits { memory: 2 << 16, ..Limits::default() });
        assert!(budget.memory_growing(0, 2 << 16, None).unwrap());
        assert_eq!(budget.refused, None);
        assert!(!budget.memory_growing(2 << 16, 3 << 16, None).unwrap());
        assert_eq!(budget.refused, Some(Refusal::Memory { wanted: 3 << 16 }));
    }
}
