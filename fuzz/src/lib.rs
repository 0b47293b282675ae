//! The bodies of warren's fuzz targets, one module per target.
//!
//! Each `fuzz_targets/<name>.rs` is a one-line libFuzzer wrapper around `<name>::run`, and
//! `tests/replay.rs` runs the same functions over every file of `corpus/<name>/`, so that a
//! plain `cargo test` (stable, no libFuzzer) checks the seed corpus and any crash input added
//! to it as a regression. A check that fails panics, which libFuzzer reports as a crash.
//!
//! Inputs that drive sessions share one format (see [`Script`]): a first byte of settings,
//! then the bytes the peer sends, split into per-connection scripts by lines holding only
//! `--`, so that corpus files stay readable transcripts.

pub mod chat_session;
pub mod chat_wire;
pub mod dns_answer;
pub mod files_wire;
pub mod http_head;
pub mod http_path;
pub mod hub_frame;
pub mod lines;
pub mod pingpong_session;
pub mod pingpong_wire;
pub mod proxy_head;
pub mod registry_wire;
pub mod xinetd_config;

/// A target's body: runs one input, panics on a failed check.
pub type Target = fn(&[u8]);

/// Every target, by name, as `cargo fuzz run` and `corpus/` name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("lines", lines::run),
    ("chat_session", chat_session::run),
    ("chat_wire", chat_wire::run),
    ("pingpong_session", pingpong_session::run),
    ("pingpong_wire", pingpong_wire::run),
    ("registry_wire", registry_wire::run),
    ("hub_frame", hub_frame::run),
    ("http_head", http_head::run),
    ("http_path", http_path::run),
    ("files_wire", files_wire::run),
    ("dns_answer", dns_answer::run),
    ("xinetd_config", xinetd_config::run),
    ("proxy_head", proxy_head::run),
];

/// A small deterministic generator (splitmix64) for chunk sizes, interleavings and clock
/// steps: the fuzzer steers it through the seed byte, and a replay sees the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded by `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x5eed_f00d_dead_beef)
    }

    /// The next 64 random bits.
    pub fn bits(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.bits() % n
    }
}

/// How far the clock moves between two chunks when a target lets it: mostly 10 ms or 1 s (a
/// hit's delay), sometimes 10 s, and rarely past the read timeout (31 s) or the idle timeout
/// (301 s), so that a game or a chat session usually survives a few hundred steps.
pub fn clock_step(rng: &mut Rng) -> std::time::Duration {
    let ms = match rng.below(256) {
        0..128 => 10,
        128..240 => 1_000,
        240..254 => 10_000,
        254 => 31_000,
        _ => 301_000,
    };
    std::time::Duration::from_millis(ms)
}

/// Cuts a byte stream into chunks as a socket would deliver them.
///
/// `mode` (3 bits) picks the largest chunk: `1 << mode` bytes for modes 0 to 6 (each chunk a
/// random size up to that), mode 7 the whole rest at once.
#[derive(Debug)]
pub struct Chunker {
    mode: u8,
}

impl Chunker {
    /// A chunker for `mode & 7`.
    pub fn new(mode: u8) -> Self {
        Self { mode: mode & 7 }
    }

    /// The length of the next chunk of a stream with `remaining > 0` bytes left.
    pub fn next_len(&self, rng: &mut Rng, remaining: usize) -> usize {
        if self.mode == 7 {
            return remaining;
        }
        let max = 1usize << self.mode;
        (1 + rng.below(max as u64) as usize).min(remaining)
    }

    /// Split `data` into chunks.
    pub fn split<'a>(&self, rng: &mut Rng, mut data: &'a [u8]) -> Vec<&'a [u8]> {
        let mut chunks = Vec::new();
        while !data.is_empty() {
            let (chunk, rest) = data.split_at(self.next_len(rng, data.len()));
            chunks.push(chunk);
            data = rest;
        }
        chunks
    }
}

/// A session-driving input: `[settings byte] script ( "--\n" script )*`.
///
/// A line holding exactly `--` (at the start of the input or after a `\n`) separates the
/// scripts of different connections; everything else, `\r`, NUL and invalid UTF-8 included,
/// is sent as is.
#[derive(Debug)]
pub struct Script<'a> {
    /// The first byte: each target documents its bits.
    pub settings: u8,
    /// The bytes each connection sends, in order; at least one, possibly empty.
    pub scripts: Vec<&'a [u8]>,
}

impl<'a> Script<'a> {
    /// Parse an input; `None` when it is empty.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (&settings, mut rest) = data.split_first()?;
        let mut scripts = Vec::new();
        let mut start = 0;
        let mut i = 0;
        while i < rest.len() {
            let at_line_start = i == 0 || rest[i - 1] == b'\n';
            if at_line_start && rest[i..].starts_with(b"--\n") {
                scripts.push(&rest[start..i]);
                start = i + 3;
                i = start;
            } else {
                i += 1;
            }
        }
        rest = &rest[start..];
        scripts.push(rest);
        Some(Self { settings, scripts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_split_on_dash_lines_only() {
        let s = Script::parse(b"\x07a\n--\nb--\n--\n--\nc").unwrap();
        assert_eq!(s.settings, 7);
        assert_eq!(s.scripts, [&b"a\n"[..], b"b--\n", b"", b"c"]);
        let s = Script::parse(b"x").unwrap();
        assert_eq!(s.scripts, [&b""[..]]);
        assert!(Script::parse(b"").is_none());
    }

    #[test]
    fn chunks_cover_the_input() {
        for mode in 0..8 {
            let data: Vec<u8> = (0..=255).collect();
            let chunks = Chunker::new(mode).split(&mut Rng::new(1), &data);
            assert_eq!(chunks.concat(), data);
            assert!(chunks.iter().all(|c| !c.is_empty()));
        }
    }
}
