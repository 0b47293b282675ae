//! The chat client's line editor: one line, edited in the terminal's raw mode, with other
//! threads' lines printed above it.
//!
//! One thread owns the terminal. Other threads hand their lines to [`Notices`], which wakes the
//! editor; the editor prints them above the prompt and redraws the prompt (asked anew at each
//! redraw, so it follows the events just printed) and the line being typed. Input is read in
//! whole chunks and every key already read is applied before the editor waits again, so a line
//! pasted at once (or typed ahead while messages arrive) is kept whole.
//!
//! Keys: printable characters, Enter, Backspace, Delete, Left/Right (Ctrl-B/F), Home/End
//! (Ctrl-A/E), Up/Down (Ctrl-P/N) through the history, Ctrl-U/K/W (erase before the cursor,
//! after it, the word before it), Ctrl-C (quit), Ctrl-D (quit on an empty line). Every
//! character is taken to be one column wide; a line wider than the terminal scrolls sideways.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use nix::libc;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

/// How long the rest of an escape sequence (or of a UTF-8 character) may take to arrive
/// before the bytes so far are dropped (a lone Esc key).
const SEQUENCE_WAIT_MS: u16 = 50;
/// Lines kept for Up and Down.
const HISTORY: usize = 1000;

/// Lines waiting to be printed above the prompt; any thread may add one.
pub struct Notices {
    queue: Mutex<VecDeque<String>>,
    /// Written once per line, non-blocking: a full buffer already means "wake up".
    wake: UnixStream,
}

impl Notices {
    /// Print `line` above the prompt as soon as the editor can.
    pub fn print(&self, line: String) {
        crate::chat_client::lock(&self.queue).push_back(line);
        let _ = (&self.wake).write(&[1]);
    }

    fn take(&self) -> Vec<String> {
        crate::chat_client::lock(&self.queue).drain(..).collect()
    }
}

/// The terminal in raw mode until dropped. Output post-processing stays on, so `\n` still
/// starts a new line.
struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    fn enter() -> io::Result<Self> {
        // SAFETY: termios is plain data, filled by tcgetattr before it is read.
        let mut mode: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd 0 and a termios we own.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut mode) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = mode;
        // SAFETY: cfmakeraw edits the struct we own; tcsetattr reads it.
        unsafe { libc::cfmakeraw(&mut mode) };
        mode.c_oflag |= libc::OPOST | libc::ONLCR;
        // SAFETY: as above.
        if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &mode) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the settings read at entry.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSADRAIN, &self.saved) };
    }
}

/// What a key does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    EraseBefore,
    EraseAfter,
    EraseWord,
    Interrupt,
    EndOfInput,
    /// A key or sequence this editor does not use.
    Ignored,
}

/// The next key in `bytes` and how many bytes it took; `None` if its end has not arrived.
fn decode(bytes: &[u8]) -> Option<(Key, usize)> {
    let first = *bytes.first()?;
    let key = match first {
        b'\r' if bytes.get(1) == Some(&b'\n') => return Some((Key::Enter, 2)),
        b'\r' | b'\n' => Key::Enter,
        0x7f | 0x08 => Key::Backspace,
        0x01 => Key::Home,
        0x02 => Key::Left,
        0x03 => Key::Interrupt,
        0x04 => Key::EndOfInput,
        0x05 => Key::End,
        0x06 => Key::Right,
        0x0b => Key::EraseAfter,
        0x0e => Key::Down,
        0x10 => Key::Up,
        0x15 => Key::EraseBefore,
        0x17 => Key::EraseWord,
        0x1b => return escape(bytes),
        0x00..=0x1f => Key::Ignored,
        _ => return utf8(bytes),
    };
    Some((key, 1))
}

/// An escape sequence: `ESC [ params final` (CSI) or `ESC O x` (SS3).
fn escape(bytes: &[u8]) -> Option<(Key, usize)> {
    match bytes.get(1)? {
        b'[' => {
            let end = 2 + bytes[2..].iter().position(|b| (0x40..=0x7e).contains(b))?;
            let key = match (&bytes[2..end], bytes[end]) {
                (b"", b'A') => Key::Up,
                (b"", b'B') => Key::Down,
                (b"", b'C') => Key::Right,
                (b"", b'D') => Key::Left,
                (b"", b'H') | (b"1" | b"7", b'~') => Key::Home,
                (b"", b'F') | (b"4" | b"8", b'~') => Key::End,
                (b"3", b'~') => Key::Delete,
                _ => Key::Ignored,
            };
            Some((key, end + 1))
        }
        b'O' => {
            let key = match bytes.get(2)? {
                b'A' => Key::Up,
                b'B' => Key::Down,
                b'C' => Key::Right,
                b'D' => Key::Left,
                b'H' => Key::Home,
                b'F' => Key::End,
                _ => Key::Ignored,
            };
            Some((key, 3))
        }
        // Alt and a key: not used.
        _ => Some((Key::Ignored, 2)),
    }
}

/// One UTF-8 character; a byte that cannot start one is skipped.
fn utf8(bytes: &[u8]) -> Option<(Key, usize)> {
    let len = match bytes[0] {
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf7 => 4,
        0x80..=0xbf | 0xf8..=0xff => return Some((Key::Ignored, 1)),
        _ => 1,
    };
    let encoded = bytes.get(..len)?;
    match std::str::from_utf8(encoded).ok().and_then(|s| s.chars().next()) {
        Some(c) => Some((Key::Char(c), len)),
        None => Some((Key::Ignored, 1)),
    }
}

/// What applying a key led to.
enum Step {
    Editing,
    Line(String),
    Quit,
}

/// The editor; see the module documentation.
pub struct Editor {
    notices: Arc<Notices>,
    woken: UnixStream,
    /// Bytes read from the terminal and not yet applied: the rest of a paste waits here.
    input: Vec<u8>,
    line: Vec<char>,
    cursor: usize,
    history: VecDeque<String>,
    /// The history entry shown, and the line being typed before browsing began.
    browsing: Option<(usize, Vec<char>)>,
    _raw: RawMode,
}

impl Editor {
    /// Take over the terminal (standard input and output).
    pub fn new() -> io::Result<Self> {
        let (wake, woken) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        woken.set_nonblocking(true)?;
        let notices = Arc::new(Notices { queue: Mutex::new(VecDeque::new()), wake });
        Ok(Self {
            notices,
            woken,
            input: Vec::new(),
            line: Vec::new(),
            cursor: 0,
            history: VecDeque::new(),
            browsing: None,
            _raw: RawMode::enter()?,
        })
    }

    /// Where other threads send lines to print above the prompt.
    pub fn notices(&self) -> Arc<Notices> {
        self.notices.clone()
    }

    /// The next line typed, or `None` on Ctrl-C, Ctrl-D on an empty line, or end of input.
    /// `prompt` is asked at every redraw.
    pub fn read_line(&mut self, prompt: &dyn Fn() -> String) -> io::Result<Option<String>> {
        self.line.clear();
        self.cursor = 0;
        self.browsing = None;
        loop {
            // Every key already read first: a paste is applied whole before any wait.
            while let Some((key, used)) = decode(&self.input) {
                self.input.drain(..used);
                match self.apply(key) {
                    Step::Editing => {}
                    Step::Line(line) => {
                        self.draw(&prompt())?;
                        write_out("\n")?;
                        return Ok(Some(line));
                    }
                    Step::Quit => {
                        write_out("\n")?;
                        return Ok(None);
                    }
                }
            }
            self.print_notices()?;
            self.draw(&prompt())?;
            if !self.wait()? {
                write_out("\n")?;
                return Ok(None);
            }
        }
    }

    /// Wait for input or notices; `false` at the end of input.
    fn wait(&mut self) -> io::Result<bool> {
        // SAFETY: standard input stays open for the life of the process.
        let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
        let timeout = if self.input.is_empty() { PollTimeout::NONE } else { PollTimeout::from(SEQUENCE_WAIT_MS) };
        let mut fds = [PollFd::new(stdin, PollFlags::POLLIN), PollFd::new(self.woken.as_fd(), PollFlags::POLLIN)];
        let ready = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => return Ok(true),
            Err(e) => return Err(e.into()),
        };
        if ready == 0 {
            // The rest of a sequence never came: it was a lone Esc, or noise.
            self.input.clear();
            return Ok(true);
        }
        if fds[1].any().unwrap_or(false) {
            let _ = (&self.woken).read(&mut [0u8; 256]);
        }
        if fds[0].any().unwrap_or(false) {
            let mut buf = [0u8; 4096];
            // SAFETY: reads into a buffer we own, at most its length.
            let n = unsafe { libc::read(libc::STDIN_FILENO, buf.as_mut_ptr().cast(), buf.len()) };
            match n {
                0 => return Ok(false),
                n if n > 0 => self.input.extend_from_slice(&buf[..n as usize]),
                _ => {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted && e.kind() != io::ErrorKind::WouldBlock {
                        return Err(e);
                    }
                }
            }
        }
        Ok(true)
    }

    fn apply(&mut self, key: Key) -> Step {
        match key {
            Key::Char(c) => {
                self.line.insert(self.cursor, c);
                self.cursor += 1;
            }
            Key::Enter => {
                let line: String = self.line.iter().collect();
                if !line.trim().is_empty() && self.history.back() != Some(&line) {
                    if self.history.len() == HISTORY {
                        self.history.pop_front();
                    }
                    self.history.push_back(line.clone());
                }
                return Step::Line(line);
            }
            Key::Backspace if self.cursor > 0 => {
                self.cursor -= 1;
                self.line.remove(self.cursor);
            }
            Key::Delete if self.cursor < self.line.len() => {
                self.line.remove(self.cursor);
            }
            Key::EndOfInput if self.line.is_empty() => return Step::Quit,
            Key::EndOfInput if self.cursor < self.line.len() => {
                self.line.remove(self.cursor);
            }
            Key::Interrupt => return Step::Quit,
            Key::Left => self.cursor = self.cursor.saturating_sub(1),
            Key::Right => self.cursor = (self.cursor + 1).min(self.line.len()),
            Key::Home => self.cursor = 0,
            Key::End => self.cursor = self.line.len(),
            Key::EraseBefore => {
                self.line.drain(..self.cursor);
                self.cursor = 0;
            }
            Key::EraseAfter => self.line.truncate(self.cursor),
            Key::EraseWord => {
                let mut start = self.cursor;
                while start > 0 && self.line[start - 1] == ' ' {
                    start -= 1;
                }
                while start > 0 && self.line[start - 1] != ' ' {
                    start -= 1;
                }
                self.line.drain(start..self.cursor);
                self.cursor = start;
            }
            Key::Up => self.browse(-1),
            Key::Down => self.browse(1),
            _ => {}
        }
        Step::Editing
    }

    /// Show the history entry `step` away from the one shown (the typed line is below the last).
    fn browse(&mut self, step: isize) {
        let len = self.history.len();
        let at = match &self.browsing {
            Some((i, _)) => *i as isize + step,
            None if step < 0 && len > 0 => len as isize - 1,
            None => return,
        };
        if at < 0 {
            return;
        }
        if at as usize >= len {
            if let Some((_, draft)) = self.browsing.take() {
                self.line = draft;
            }
        } else {
            let draft = match self.browsing.take() {
                Some((_, draft)) => draft,
                None => std::mem::take(&mut self.line),
            };
            self.line = self.history[at as usize].chars().collect();
            self.browsing = Some((at as usize, draft));
        }
        self.cursor = self.line.len();
    }

    /// Print the waiting notices above the prompt line.
    fn print_notices(&mut self) -> io::Result<()> {
        let lines = self.notices.take();
        if lines.is_empty() {
            return Ok(());
        }
        let mut text = String::from("\r\x1b[K");
        for line in lines {
            text.push_str(&line);
            text.push('\n');
        }
        write_out(&text)
    }

    /// Redraw the prompt line: the part of the line around the cursor that fits.
    fn draw(&self, prompt: &str) -> io::Result<()> {
        let width = prompt.chars().count();
        let room = terminal_columns().saturating_sub(width + 1).max(8);
        let start = self.cursor.saturating_sub(room);
        let end = (start + room).min(self.line.len());
        let shown: String = self.line[start..end].iter().collect();
        let column = width + self.cursor - start;
        let mut text = format!("\r\x1b[K{prompt}{shown}\r");
        if column > 0 {
            text.push_str(&format!("\x1b[{column}C"));
        }
        write_out(&text)
    }
}

impl Drop for Editor {
    /// Lines still waiting (the server's `bye` after `/quit`) are printed before the terminal
    /// goes back to its normal mode.
    fn drop(&mut self) {
        let _ = self.print_notices();
    }
}

fn write_out(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// The terminal's width; 80 if it cannot say.
fn terminal_columns() -> usize {
    // SAFETY: winsize is plain data; TIOCGWINSZ fills it.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize through the pointer, which points to ours.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if rc == 0 && size.ws_col > 0 { usize::from(size.ws_col) } else { 80 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(mut bytes: &[u8]) -> Vec<Key> {
        let mut keys = Vec::new();
        while let Some((key, used)) = decode(bytes) {
            keys.push(key);
            bytes = &bytes[used..];
        }
        keys
    }

    #[test]
    fn a_pasted_line_is_every_key_in_order() {
        let want: Vec<Key> = "hé b".chars().map(Key::Char).chain([Key::Enter]).collect();
        assert_eq!(keys("hé b\r".as_bytes()), want);
    }

    #[test]
    fn escape_sequences_are_keys_and_an_unfinished_one_waits() {
        assert_eq!(
            keys(b"\x1b[A\x1b[D\x1bOH\x1b[3~\x1b[200~x"),
            [Key::Up, Key::Left, Key::Home, Key::Delete, Key::Ignored, Key::Char('x')]
        );
        assert_eq!(decode(b"\x1b["), None);
        assert_eq!(decode(b"\x1b"), None);
        assert_eq!(decode("é".as_bytes().get(..1).unwrap()), None);
    }

    #[test]
    fn control_keys() {
        assert_eq!(
            keys(b"\x03\x04\x7f\x15\x17\r\n"),
            [Key::Interrupt, Key::EndOfInput, Key::Backspace, Key::EraseBefore, Key::EraseWord, Key::Enter]
        );
    }
}
