//! `warren chat [host port]`: the interactive chat client (the course's `ChatClient`).
//!
//! Blocking and two-threaded: the main thread edits lines (`line_editor`) and sends each as a
//! JSON command; a reader thread hands the server's events to the editor, which prints them
//! above the prompt (so output never garbles a half-typed line) and redraws the prompt from the
//! state those events left (so it shows the nick and channel the server just confirmed). Typed
//! lines are parsed, and events rendered, by `warren_proto::chat::text`, exactly as the
//! server's plain-text mode does for `nc` users. Without a terminal (input piped in) lines are
//! read plainly and no prompt is shown, so the client can be scripted.
//!
//! `/connect` (and the server given on the command line) waits at most `--timeout` for the
//! connection and the server's welcome, and says what went wrong in words, naming the address:
//! nothing listening, no answer, or an answer that is not a chat server's.

use std::io::{BufRead, ErrorKind, IsTerminal, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use warren_proto::chat::{Command, DEFAULT_PORT, Event, PROTOCOL_VERSION, Typed, help_lines, parse_typed, render_text};
use warren_proto::lines::LineReader;

use crate::line_editor::Editor;

/// How often the reader thread wakes to check for a stop request and a due keepalive.
const TICK: Duration = Duration::from_secs(1);
/// An empty line this often keeps a quiet user from the server's idle timeout.
const KEEPALIVE: Duration = Duration::from_secs(60);
/// How long `/quit` waits for the server's `bye` before giving up.
const QUIT_WAIT: Duration = Duration::from_secs(3);
/// Writing gives up after this long rather than hang the prompt.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest first line taken as a welcome; a peer that sends more without a newline is not
/// a chat server.
const MAX_WELCOME_LINE: usize = 4096;
/// The longest event line accepted (a listing of the server's 1000 channels fits easily).
const MAX_EVENT_LINE: usize = 1 << 20;

/// Prints a line above the prompt; shared by both threads.
type Printer = Arc<Mutex<Box<dyn FnMut(String) + Send>>>;

/// Run the client until `/quit` or end of input; connect first if `server` is given. Connecting
/// gives up after `timeout` without a welcome.
pub fn run(server: Option<(String, u16)>, timeout: Duration) -> anyhow::Result<()> {
    let mut input = Input::new()?;
    let printer = input.printer();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let state = Arc::new(Mutex::new(State::default()));
    let peer = Peer { state: state.clone(), printer: printer.clone(), color, timeout };
    let mut conn: Option<Connection> = None;
    match server {
        Some((host, port)) => conn = Connection::open(&host, port, &peer),
        None => say(&printer, format!("* not connected: /connect <server> [port] (port {DEFAULT_PORT} if none)")),
    }
    loop {
        // Forget a connection the server closed, so that the prompt says so.
        if let Some(c) = conn.take_if(|c| c.is_done()) {
            c.close();
        }
        let prompt = || lock(&state).prompt(conn.as_ref().is_some_and(|c| !c.is_done()));
        let Some(line) = input.next(&prompt)? else {
            break;
        };
        match parse_typed(&line) {
            Ok(Typed::Nothing) => {}
            Err(e) => say(&printer, format!("! {e}")),
            Ok(Typed::Connect { server, port }) => {
                if let Some(c) = conn.take() {
                    c.close();
                }
                conn = Connection::open(&server, port.unwrap_or(DEFAULT_PORT), &peer);
            }
            Ok(Typed::Command(Command::Quit {})) => break,
            Ok(Typed::Command(Command::Help {})) if conn.is_none() => {
                say(&printer, help_lines().iter().map(|l| format!("* {l}")).collect::<Vec<_>>().join("\n"));
            }
            Ok(Typed::Command(command)) => match conn.as_mut() {
                Some(c) => c.send(&command, &printer),
                None => say(&printer, "! not connected: /connect <server> [port]".into()),
            },
        }
    }
    if let Some(c) = conn {
        c.close();
    }
    Ok(())
}

/// Where typed lines come from: the line editor on a terminal, plain lines otherwise.
enum Input {
    /// Boxed: the editor is large, and there is one `Input`.
    Editor(Box<Editor>),
    Piped(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    fn new() -> anyhow::Result<Self> {
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Ok(Input::Editor(Box::new(Editor::new().context("starting the line editor")?)))
        } else {
            Ok(Input::Piped(std::io::stdin().lock().lines()))
        }
    }

    /// How to print from any thread: above the prompt when there is one.
    fn printer(&mut self) -> Printer {
        if let Input::Editor(editor) = self {
            let notices = editor.notices();
            return Arc::new(Mutex::new(Box::new(move |line: String| notices.print(line))));
        }
        Arc::new(Mutex::new(Box::new(|line: String| println!("{line}"))))
    }

    /// The next typed line, or `None` at end of input (Ctrl-D) or on Ctrl-C. `prompt` is asked
    /// again whenever the prompt is redrawn.
    fn next(&mut self, prompt: &dyn Fn() -> String) -> anyhow::Result<Option<String>> {
        match self {
            Input::Editor(editor) => editor.read_line(prompt).context("reading a line"),
            Input::Piped(lines) => lines.next().transpose().context("reading standard input"),
        }
    }
}

/// What the prompt shows, kept up to date from the events about this user.
#[derive(Debug, Default)]
struct State {
    nick: Option<String>,
    /// The channels this user is on, in join order: the last one is current.
    channels: Vec<String>,
}

impl State {
    fn prompt(&self, connected: bool) -> String {
        match (connected, &self.nick, self.channels.last()) {
            (false, _, _) => "chat> ".into(),
            (true, Some(nick), Some(channel)) => format!("{nick} {channel}> "),
            (true, Some(nick), None) => format!("{nick}> "),
            (true, None, _) => "> ".into(),
        }
    }

    fn apply(&mut self, event: &Event) {
        let me = |nick: &str| self.nick.as_deref() == Some(nick);
        match event {
            Event::Welcome { nick, .. } => *self = State { nick: Some(nick.clone()), channels: Vec::new() },
            Event::Nick { old, new } if me(old) => self.nick = Some(new.clone()),
            Event::Joined { channel, nick, .. } if me(nick) => {
                self.channels.retain(|c| c != channel);
                self.channels.push(channel.clone());
            }
            Event::Left { channel, nick, .. } if me(nick) => self.channels.retain(|c| c != channel),
            _ => {}
        }
    }
}

/// One connection to a server: the writing half here, the reading half in its own thread.
struct Connection {
    /// Shared with the reader thread, which writes the keepalives.
    writer: Arc<Mutex<TcpStream>>,
    /// Set by the reader thread once the server has closed the connection.
    done: Arc<AtomicBool>,
    /// Asks the reader thread to stop waiting for the server.
    stop: Arc<AtomicBool>,
    reader: JoinHandle<()>,
}

/// What a connection needs from the client: where events go and how long to wait.
struct Peer {
    state: Arc<Mutex<State>>,
    printer: Printer,
    color: bool,
    /// Connecting and the server's welcome must both come within this.
    timeout: Duration,
}

impl Connection {
    /// Connect and say hello; on failure print why and return `None`.
    fn open(host: &str, port: u16, peer: &Peer) -> Option<Self> {
        match Self::try_open(host, port, peer) {
            Ok(conn) => Some(conn),
            Err(why) => {
                say(&peer.printer, format!("! {why}"));
                None
            }
        }
    }

    /// Connect, say hello and wait for the welcome; the error is a whole sentence naming the
    /// address, for the user.
    fn try_open(host: &str, port: u16, peer: &Peer) -> Result<Self, String> {
        let deadline = Instant::now() + peer.timeout;
        let (stream, addr) = connect(host, port, peer.timeout)?;
        let expected = "expected a warren chat server";
        let broken = |e: std::io::Error| format!("{addr}: {}; {expected}", plain(&e, peer.timeout));
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).map_err(broken)?;
        let reading = stream.try_clone().map_err(broken)?;
        let writer = Arc::new(Mutex::new(stream));
        write_line(&writer, &Command::Hello { version: PROTOCOL_VERSION }.to_json()).map_err(broken)?;
        let (welcome, rest) = read_welcome(&reading, addr, deadline, peer.timeout)?;
        match Event::from_json(&welcome) {
            Ok(Event::Welcome { .. }) => {}
            // The server's own refusal (busy, another version): its words say it best.
            Ok(event @ (Event::Error { .. } | Event::Bye { .. } | Event::Shutdown { .. })) => {
                return Err(format!("{addr}: {}", render_text(&event)));
            }
            Ok(_) => return Err(format!("{addr} sent another event before its welcome; {expected}")),
            Err(_) => {
                return Err(format!("{addr} answered {:?}, which is not a chat event; {expected}", cut(&welcome)));
            }
        }
        // The reader wakes every tick for keepalives and stop requests.
        reading.set_read_timeout(Some(TICK)).map_err(broken)?;
        let mut lines = LineReader::new(MAX_EVENT_LINE);
        lines.push(&rest);
        let (done, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let reader = Reader {
            stream: reading,
            lines,
            writer: writer.clone(),
            state: peer.state.clone(),
            printer: peer.printer.clone(),
            stop: stop.clone(),
            color: peer.color,
        };
        reader.show(welcome.as_bytes());
        let finished = done.clone();
        let reader = std::thread::Builder::new()
            .name("chat-reader".into())
            .spawn(move || {
                reader.run();
                finished.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("cannot start reading from {addr}: {e}"))?;
        Ok(Self { writer, done, stop, reader })
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    fn send(&mut self, command: &Command, printer: &Printer) {
        if let Err(e) = write_line(&self.writer, &command.to_json()) {
            say(printer, format!("! cannot send: {}", plain(&e, WRITE_TIMEOUT)));
        }
    }

    /// Quit politely: ask the server to let go, and wait (a little) for its `bye` and close.
    fn close(self) {
        if !self.is_done() {
            let _ = write_line(&self.writer, &Command::Quit {}.to_json());
            let _ = lock(&self.writer).shutdown(Shutdown::Write);
        }
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.reader.join();
    }
}

/// The reader thread's belongings.
struct Reader {
    stream: TcpStream,
    /// Bytes read after the welcome, and the lines being cut.
    lines: LineReader,
    writer: Arc<Mutex<TcpStream>>,
    state: Arc<Mutex<State>>,
    printer: Printer,
    stop: Arc<AtomicBool>,
    color: bool,
}

impl Reader {
    /// Print events until the server closes, the connection fails, or a stop request has
    /// waited [`QUIT_WAIT`].
    fn run(mut self) {
        let mut buf = [0u8; 8192];
        let (mut keepalive, mut stopping) = (Instant::now(), None::<Instant>);
        let mut farewell = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.lines.push(&buf[..n]);
                    loop {
                        match self.lines.next_line() {
                            Ok(Some(line)) => farewell |= self.show(&line),
                            Ok(None) => break,
                            Err(e) => return say(&self.printer, format!("! bad answer from the server: {e}")),
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return say(&self.printer, format!("! connection lost: {}", plain(&e, TICK))),
            }
            if self.stop.load(Ordering::SeqCst) && stopping.get_or_insert_with(Instant::now).elapsed() >= QUIT_WAIT {
                return;
            }
            if stopping.is_none() && keepalive.elapsed() >= KEEPALIVE {
                keepalive = Instant::now();
                let _ = write_line(&self.writer, "");
            }
        }
        if !farewell {
            say(&self.printer, "* the server closed the connection; /connect to reconnect".into());
        }
    }

    /// Print one event line; whether it was a farewell (`bye`, `shutdown`).
    fn show(&self, line: &[u8]) -> bool {
        let event = match std::str::from_utf8(line).map_err(|e| e.to_string()).and_then(Event::from_json) {
            Ok(event) => event,
            Err(e) => {
                say(&self.printer, format!("! unreadable event from the server: {e}"));
                return false;
            }
        };
        lock(&self.state).apply(&event);
        let text = render_text(&event);
        let color = match &event {
            Event::Error { .. } | Event::Shutdown { .. } => "31",
            Event::Message { .. } | Event::Help { .. } | Event::List { .. } | Event::Stats { .. } => "",
            _ => "36",
        };
        say(&self.printer, if self.color && !color.is_empty() { format!("\x1b[{color}m{text}\x1b[0m") } else { text });
        matches!(event, Event::Bye { .. } | Event::Shutdown { .. })
    }
}

fn write_line(writer: &Mutex<TcpStream>, json: &str) -> std::io::Result<()> {
    let mut stream = lock(writer);
    stream.write_all(format!("{json}\n").as_bytes())
}

fn say(printer: &Printer, line: String) {
    (lock(printer))(line);
}

/// Connect to the first address of `host` that answers within `timeout`.
fn connect(host: &str, port: u16, timeout: Duration) -> Result<(TcpStream, SocketAddr), String> {
    let addrs: Vec<SocketAddr> = match (host, port).to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(_) => return Err(format!("cannot connect to {host} port {port}: the name does not resolve")),
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok((stream, addr)),
            Err(e) => last = Some((addr, e)),
        }
    }
    Err(match last {
        Some((addr, e)) => format!("cannot connect to {addr}: {}; expected a warren chat server", plain(&e, timeout)),
        None => format!("cannot connect to {host} port {port}: the name has no address"),
    })
}

/// The first line the server sends (its welcome), and any bytes after it, read until
/// `deadline`; an error sentence naming `addr` if there is none.
fn read_welcome(
    stream: &TcpStream,
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<(String, Vec<u8>), String> {
    let expected = "expected a warren chat server";
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.iter().position(|&b| b == b'\n') {
            let rest = got.split_off(end + 1);
            let line = String::from_utf8_lossy(&got).trim_end_matches(['\r', '\n']).to_string();
            return Ok((line, rest));
        }
        if got.len() > MAX_WELCOME_LINE {
            return Err(format!("{addr} answered {:?}..., which is not a chat event; {expected}", cut_bytes(&got)));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(match got.len() {
                0 => format!("{addr} did not answer within {}; {expected}", humantime::format_duration(timeout)),
                n => format!(
                    "{addr} sent {n} bytes but no whole line within {} ({:?}); {expected}",
                    humantime::format_duration(timeout),
                    cut_bytes(&got)
                ),
            });
        }
        let mut stream = stream;
        let read = stream.set_read_timeout(Some(left)).and_then(|()| stream.read(&mut buf));
        match read {
            Ok(0) if got.is_empty() => return Err(format!("{addr} closed the connection without a word; {expected}")),
            Ok(0) => {
                return Err(format!("{addr} closed the connection after {:?}; {expected}", cut_bytes(&got)));
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
            Err(e) => return Err(format!("{addr}: {}; {expected}", plain(&e, timeout))),
        }
    }
}

/// An I/O failure in words, without the OS's error number.
fn plain(e: &std::io::Error, timeout: Duration) -> String {
    match e.kind() {
        ErrorKind::ConnectionRefused => "connection refused (nothing listens there)".into(),
        ErrorKind::TimedOut | ErrorKind::WouldBlock => {
            format!("no answer within {}", humantime::format_duration(timeout))
        }
        ErrorKind::ConnectionReset => "the peer reset the connection".into(),
        ErrorKind::HostUnreachable => "the host is unreachable".into(),
        ErrorKind::NetworkUnreachable => "the network is unreachable".into(),
        ErrorKind::AddrNotAvailable => "the address is not available".into(),
        kind => kind.to_string(),
    }
}

/// The start of a peer's foreign answer, short enough for one line.
fn cut(text: &str) -> String {
    text.chars().take(60).collect()
}

fn cut_bytes(bytes: &[u8]) -> String {
    cut(&String::from_utf8_lossy(bytes))
}

/// Lock, ignoring poisoning: a panic elsewhere must not stop the prompt.
pub(crate) fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
