//! `warren chat [host port]`: the interactive chat client (the course's `ChatClient`).
//!
//! Blocking and two-threaded: the main thread edits lines with rustyline and sends each as a
//! JSON command; a reader thread prints the server's events above the prompt (through
//! rustyline's external printer, so that output never garbles a half-typed line). Typed lines
//! are parsed, and events rendered, by `warren_proto::chat::text`, exactly as the server's
//! plain-text mode does for `nc` users. Without a terminal (input piped in) lines are read
//! plainly and no prompt is shown, so the client can be scripted.

use std::io::{BufRead, ErrorKind, IsTerminal, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter};
use warren_proto::chat::{Command, DEFAULT_PORT, Event, PROTOCOL_VERSION, Typed, help_lines, parse_typed, render_text};
use warren_proto::lines::LineReader;

/// How often the reader thread wakes to check for a stop request and a due keepalive.
const TICK: Duration = Duration::from_secs(1);
/// An empty line this often keeps a quiet user from the server's idle timeout.
const KEEPALIVE: Duration = Duration::from_secs(60);
/// How long `/quit` waits for the server's `bye` before giving up.
const QUIT_WAIT: Duration = Duration::from_secs(3);
/// Connecting and writing give up after this long rather than hang the prompt.
const NET_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest event line accepted (a listing of the server's 1000 channels fits easily).
const MAX_EVENT_LINE: usize = 1 << 20;

/// Prints a line above the prompt; shared by both threads.
type Printer = Arc<Mutex<Box<dyn FnMut(String) + Send>>>;

/// Run the client until `/quit` or end of input; connect first if `server` is given.
pub fn run(server: Option<(String, u16)>) -> anyhow::Result<()> {
    let mut input = Input::new()?;
    let printer = input.printer();
    let color = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let state = Arc::new(Mutex::new(State::default()));
    let mut conn: Option<Connection> = None;
    match server {
        Some((host, port)) => conn = Connection::open(&host, port, &state, &printer, color),
        None => say(&printer, format!("* not connected: /connect <server> [port] (port {DEFAULT_PORT} if none)")),
    }
    loop {
        // Forget a connection the server closed, so that the prompt says so.
        if let Some(c) = conn.take_if(|c| c.is_done()) {
            c.close();
        }
        let prompt = lock(&state).prompt(conn.is_some());
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
                conn = Connection::open(&server, port.unwrap_or(DEFAULT_PORT), &state, &printer, color);
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

/// Where typed lines come from: rustyline on a terminal, plain lines otherwise.
enum Input {
    /// Boxed: the editor is large, and there is one `Input`.
    Editor(Box<DefaultEditor>),
    Piped(std::io::Lines<std::io::StdinLock<'static>>),
}

impl Input {
    fn new() -> anyhow::Result<Self> {
        if std::io::stdin().is_terminal() {
            Ok(Input::Editor(Box::new(DefaultEditor::new().context("starting the line editor")?)))
        } else {
            Ok(Input::Piped(std::io::stdin().lock().lines()))
        }
    }

    /// How to print from any thread: above the prompt when there is one.
    fn printer(&mut self) -> Printer {
        if let Input::Editor(editor) = self
            && let Ok(mut external) = editor.create_external_printer()
        {
            return Arc::new(Mutex::new(Box::new(move |line: String| {
                // Nothing better to do if the terminal is gone.
                let _ = external.print(line + "\n");
            })));
        }
        Arc::new(Mutex::new(Box::new(|line: String| println!("{line}"))))
    }

    /// The next typed line, or `None` at end of input (Ctrl-D) or on Ctrl-C.
    fn next(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        match self {
            Input::Editor(editor) => match editor.readline(prompt) {
                Ok(line) => {
                    let _ = editor.add_history_entry(line.as_str());
                    Ok(Some(line))
                }
                Err(ReadlineError::Eof | ReadlineError::Interrupted) => Ok(None),
                Err(e) => Err(e).context("reading a line"),
            },
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

impl Connection {
    /// Connect and say hello; on failure print why and return `None`.
    fn open(host: &str, port: u16, state: &Arc<Mutex<State>>, printer: &Printer, color: bool) -> Option<Self> {
        match Self::try_open(host, port, state, printer, color) {
            Ok(conn) => Some(conn),
            Err(e) => {
                say(printer, format!("! cannot connect to {host} port {port}: {e:#}"));
                None
            }
        }
    }

    fn try_open(
        host: &str,
        port: u16,
        state: &Arc<Mutex<State>>,
        printer: &Printer,
        color: bool,
    ) -> anyhow::Result<Self> {
        let mut last = None;
        let mut stream = None;
        for addr in (host, port).to_socket_addrs().context("resolving the name")? {
            match TcpStream::connect_timeout(&addr, NET_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(stream), _) => stream,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => anyhow::bail!("no address for {host}"),
        };
        stream.set_write_timeout(Some(NET_TIMEOUT))?;
        // The reader wakes every tick for keepalives and stop requests.
        stream.set_read_timeout(Some(TICK))?;
        let reading = stream.try_clone()?;
        let writer = Arc::new(Mutex::new(stream));
        write_line(&writer, &Command::Hello { version: PROTOCOL_VERSION }.to_json())?;
        let (done, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let reader = Reader {
            stream: reading,
            writer: writer.clone(),
            state: state.clone(),
            printer: printer.clone(),
            stop: stop.clone(),
            color,
        };
        let finished = done.clone();
        let reader = std::thread::Builder::new().name("chat-reader".into()).spawn(move || {
            reader.run();
            finished.store(true, Ordering::SeqCst);
        })?;
        Ok(Self { writer, done, stop, reader })
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::SeqCst)
    }

    fn send(&mut self, command: &Command, printer: &Printer) {
        if let Err(e) = write_line(&self.writer, &command.to_json()) {
            say(printer, format!("! cannot send: {e}"));
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
        let mut lines = LineReader::new(MAX_EVENT_LINE);
        let mut buf = [0u8; 8192];
        let (mut keepalive, mut stopping) = (Instant::now(), None::<Instant>);
        let mut farewell = false;
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    lines.push(&buf[..n]);
                    loop {
                        match lines.next_line() {
                            Ok(Some(line)) => farewell |= self.show(&line),
                            Ok(None) => break,
                            Err(e) => return say(&self.printer, format!("! bad answer from the server: {e}")),
                        }
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {}
                Err(e) => return say(&self.printer, format!("! connection lost: {e}")),
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

/// Lock, ignoring poisoning: a panic elsewhere must not stop the prompt.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
