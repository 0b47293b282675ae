//! The agent protocol's server side, a sans-IO session like every warren protocol: it reads one
//! request frame, runs it as a blocking job on the model's helpers (an agent may compute for
//! its whole wall-time limit), and answers one frame; then it reads the next. A fetch, a list
//! and an order are answered at once: they only copy or set a little state. Moving agents
//! (start, arrive, wait) live in the service's [`Roster`], beyond any one connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use warren_proto::{ConnInfo, Deadline, Job, Level, Limits, NoHub, Nothing, Output, Service, Session, Token};

use crate::roster::{Resolve, Roster, resolve_address};
use crate::wire::{FRAMING, Request, Response, RunRequest, encode};
use crate::{Grants, Host, ModuleSignature, Value};

/// How long one wait for a moving agent lasts before the client is told to ask again.
const WAIT_WITHIN: Duration = Duration::from_secs(10);

/// The agent host served over TCP.
#[derive(Debug, Clone)]
pub struct AgentService {
    host: Arc<Host>,
    roster: Arc<Roster>,
    limits: Limits,
    job: crate::Limits,
}

impl AgentService {
    /// Serves `host`; `limits` give the idle and read timeouts (its `max_request` is unused:
    /// frames are bounded by [`FRAMING`]). Each agent runs with the default [`crate::Limits`].
    /// Agents arriving from other nodes may hold the clock and log here; destinations are
    /// `ADDR:PORT` or `HOST:PORT`.
    pub fn new(host: Arc<Host>, limits: Limits) -> AgentService {
        AgentService::with_resolver(host, limits, Arc::new(resolve_address))
    }

    /// As [`AgentService::new`], finding destinations with `resolve`.
    pub fn with_resolver(host: Arc<Host>, limits: Limits, resolve: Resolve) -> AgentService {
        let allow = Grants { clock: true, log: true, ..Grants::default() };
        let roster = Roster::new(host.clone(), allow, resolve);
        AgentService { host, roster, limits, job: crate::Limits::default() }
    }

    /// Its moving agents.
    pub fn roster(&self) -> &Arc<Roster> {
        &self.roster
    }

    /// Runs each agent with `job` limits instead (at most the host's ceiling, or every run is
    /// refused).
    pub fn with_job_limits(mut self, job: crate::Limits) -> AgentService {
        self.job = job;
        self
    }
}

impl Service for AgentService {
    type Hub = NoHub;
    type Session = AgentSession;

    fn name(&self) -> &'static str {
        "agents"
    }

    fn new_session(&self, _: &ConnInfo, now: Instant) -> AgentSession {
        AgentSession {
            host: self.host.clone(),
            roster: self.roster.clone(),
            job: self.job,
            deadline: Deadline::new(&self.limits, now),
            buf: Vec::new(),
            running: false,
            ending: false,
        }
    }

    fn new_hub(&self, _: Instant) -> NoHub {
        NoHub
    }
}

/// One connection.
#[derive(Debug)]
pub struct AgentSession {
    host: Arc<Host>,
    roster: Arc<Roster>,
    job: crate::Limits,
    deadline: Deadline,
    /// Bytes of requests not yet taken: at most one frame and what arrived with it, since
    /// nothing is read while a request runs.
    buf: Vec<u8>,
    running: bool,
    /// The peer closed or the server stops: end after the answer being computed.
    ending: bool,
}

type Out = Output<Nothing, Response>;

impl AgentSession {
    /// Starts the request at the front of the buffer, if it has all arrived; fetches are
    /// answered at once, until a run starts or the buffer holds no whole frame.
    fn next(&mut self, now: Instant, out: &mut Out) {
        while !self.running && self.take(now, out) {}
    }

    /// Takes one request: true if it was answered at once and the next may follow.
    fn take(&mut self, now: Instant, out: &mut Out) -> bool {
        let (request, len) = match FRAMING.split(&self.buf) {
            Ok(Some((body, len))) => (postcard::from_bytes::<Request>(body), len),
            Ok(None) if self.ending => {
                out.close();
                return false;
            }
            Ok(None) => {
                self.deadline.input(now, !self.buf.is_empty());
                return false;
            }
            Err(error) => return refuse(out, format!("bad frame: {error}")),
        };
        self.buf.drain(..len);
        match request {
            Ok(Request::Run(run)) => {
                let (host, limits) = (self.host.clone(), self.job);
                self.running = true;
                out.log(
                    Level::Debug,
                    format!("agents: running {} bytes of module, entry {:?}", run.module.len(), run.entry),
                );
                out.job(Token(0), Job::blocking(move || execute(&host, run, limits)));
                false
            }
            Ok(Request::Start(run)) => {
                let (roster, limits) = (self.roster.clone(), self.job);
                self.blocking(out, move || start(&roster, run, limits))
            }
            Ok(Request::Arrive(arrival)) => {
                let roster = self.roster.clone();
                self.blocking(out, move || roster.arrive(arrival))
            }
            Ok(Request::ArriveParts { upload, arrival }) => {
                let roster = self.roster.clone();
                self.blocking(out, move || roster.arrive_parts(upload, arrival))
            }
            Ok(Request::Part(part)) => {
                out.send(&encode(&self.roster.part(part)));
                self.deadline.touch(now);
                true
            }
            Ok(Request::Wait(id)) => {
                let roster = self.roster.clone();
                self.blocking(out, move || Response::Ended(roster.wait(id, WAIT_WITHIN)))
            }
            Ok(Request::Order(order)) => {
                let response = match self.roster.order(&order) {
                    Ok(()) => Response::Ordered,
                    Err(reason) => Response::Refused(reason),
                };
                out.send(&encode(&response));
                self.deadline.touch(now);
                true
            }
            Ok(Request::List) => {
                out.send(&encode(&Response::Agents(self.roster.list())));
                self.deadline.touch(now);
                true
            }
            Ok(Request::Reference { token, call }) => {
                let host = self.host.clone();
                self.blocking(out, move || host.references().serve(&host, &token, call))
            }
            Ok(Request::Fetch(id)) => {
                let id = crate::ModuleId(id);
                let response = match self.host.bytes(&id) {
                    Some(bytes) => Response::Module(bytes.to_vec()),
                    None => Response::Refused(format!("no module {id} is held on this host")),
                };
                out.send(&encode(&response));
                self.deadline.touch(now);
                true
            }
            Err(error) => refuse(out, format!("bad request: {error}")),
        }
    }
}

impl AgentSession {
    /// Runs `work` on the model's helpers; its answer is sent when it completes.
    fn blocking(&mut self, out: &mut Out, work: impl FnOnce() -> Response + Send + 'static) -> bool {
        self.running = true;
        out.job(Token(0), Job::blocking(work));
        false
    }
}

/// Answers `reason` and closes: the stream cannot be trusted past a bad frame.
fn refuse(out: &mut Out, reason: String) -> bool {
    out.send(&encode(&Response::Refused(reason)));
    out.close();
    false
}

/// Loads the request's module, parses its arguments and runs it under `limits`.
pub fn execute(host: &Host, run: RunRequest, limits: crate::Limits) -> Response {
    let attempt = || -> Result<crate::Outcome, String> {
        let signature = run.signature()?;
        let module = host.load(&run.module, signature.as_ref()).map_err(|error| error.to_string())?;
        host.run(&job_of(host, module, &run, limits)?).map_err(|error| error.to_string())
    };
    match attempt() {
        Ok(outcome) => Response::Done(outcome),
        Err(reason) => Response::Refused(reason),
    }
}

/// Prepares the request's module for mobility and starts it as a moving agent of `roster`.
pub fn start(roster: &Arc<Roster>, run: RunRequest, limits: crate::Limits) -> Response {
    let attempt = || -> Result<u64, String> {
        let signature: Option<ModuleSignature> = run.signature()?;
        let host = roster.host();
        let module = host.prepare(&run.module, signature.as_ref()).map_err(|error| error.to_string())?.module;
        roster.start(job_of(host, module, &run, limits)?, signature)
    };
    match attempt() {
        Ok(id) => Response::Started(id),
        Err(reason) => Response::Refused(reason),
    }
}

/// The job a request describes, its arguments parsed with the entry's parameter types.
fn job_of(host: &Host, module: crate::ModuleId, run: &RunRequest, limits: crate::Limits) -> Result<crate::Job, String> {
    let params = host.params(&module, &run.entry).map_err(|error| error.to_string())?;
    if params.len() != run.args.len() {
        return Err(format!(
            "entry {:?} takes {} arguments ({}), not {}",
            run.entry,
            params.len(),
            params.join(", "),
            run.args.len()
        ));
    }
    let args = run
        .args
        .iter()
        .zip(&params)
        .enumerate()
        .map(|(at, (text, ty))| {
            Value::parse(text, ty).ok_or_else(|| format!("argument {} ({text:?}) is not an {ty}", at + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let offers = &host.config().offers;
    if let Some(kv) = run.kv.as_ref().filter(|kv| !offers.buckets.contains_key(&kv.bucket)) {
        return Err(refused_offer("kv bucket", &kv.bucket, offers.buckets.keys()));
    }
    if let Some(file) = run.file.as_ref().filter(|file| !offers.files.contains_key(&file.name)) {
        return Err(refused_offer("file", &file.name, offers.files.keys()));
    }
    Ok(crate::Job {
        args,
        input: run.input.clone(),
        grants: run.grants(),
        limits,
        ..crate::Job::new(module, &run.entry)
    })
}

/// Why a resource asked for is refused: the host does not offer it, and what it offers.
fn refused_offer<'a>(kind: &str, name: &str, offered: impl Iterator<Item = &'a String>) -> String {
    let offered: Vec<&str> = offered.map(String::as_str).collect();
    let offered = if offered.is_empty() { "none".to_owned() } else { offered.join(", ") };
    format!("this host offers no {kind} {name:?} (it offers: {offered})")
}

impl Session for AgentSession {
    type Request = Nothing;
    type Message = Nothing;
    type Done = Response;

    fn handle_open(&mut self, _: Instant, _: &mut Out) {}

    fn handle_input(&mut self, now: Instant, data: &[u8], out: &mut Out) {
        self.buf.extend_from_slice(data);
        if !self.running {
            self.next(now, out);
        }
    }

    fn handle_completion(&mut self, now: Instant, _: Token, response: Response, out: &mut Out) {
        self.running = false;
        out.send(&encode(&response));
        self.deadline.touch(now);
        self.next(now, out);
    }

    fn handle_read_closed(&mut self, now: Instant, out: &mut Out) {
        self.ending = true;
        if !self.running {
            self.next(now, out);
        }
    }

    fn handle_shutdown(&mut self, now: Instant, out: &mut Out) {
        self.handle_read_closed(now, out);
    }

    fn handle_message(&mut self, _: Instant, message: Nothing, _: &mut Out) {
        match message {}
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Out) {
        if !self.running && now >= self.deadline.at() {
            out.close();
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        (!self.running).then(|| self.deadline.at())
    }

    fn wants_input(&self) -> bool {
        !self.running && !self.ending
    }
}

#[cfg(test)]
mod tests {
    use warren_proto::{Action, SessionId};

    use super::*;
    use crate::{HostConfig, Trust, Unsigned};

    const SUM: &str = r#"(module (func (export "add") (param i32 i32) (result i32)
        (i32.add (local.get 0) (local.get 1))))"#;

    fn session() -> AgentSession {
        let trust = Trust::new().unsigned(Unsigned::Allow);
        let host = Host::new(HostConfig { trust, ..HostConfig::default() }).unwrap();
        let service = AgentService::new(Arc::new(host), Limits::default());
        let info = ConnInfo { id: SessionId(1), peer: None, wall: std::time::SystemTime::now(), seed: 0 };
        service.new_session(&info, Instant::now())
    }

    fn request(args: &[&str]) -> Vec<u8> {
        encode(&Request::Run(RunRequest {
            module: wat::parse_str(SUM).unwrap(),
            signature: None,
            entry: "add".into(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            input: Vec::new(),
            clock: false,
            log: false,
            kv: None,
            file: None,
            bind: Default::default(),
        }))
    }

    /// Runs the job the session asked for and hands it the result.
    fn complete(session: &mut AgentSession, out: &mut Out) {
        // The request's log line comes first.
        let (token, job) = std::iter::from_fn(|| out.poll_action())
            .find_map(|action| match action {
                Action::Job(token, Job::Blocking(job)) => Some((token, job)),
                _ => None,
            })
            .expect("a blocking job");
        session.handle_completion(Instant::now(), token, job(), out);
    }

    fn answer(out: &mut Out) -> Response {
        let (body, len) = FRAMING.split(out.pending()).unwrap().expect("a whole frame");
        let response = postcard::from_bytes(body).unwrap();
        out.consume(len);
        response
    }

    #[test]
    fn a_request_in_pieces_runs_once_whole_and_the_next_follows() {
        let (mut session, mut out) = (session(), Out::new());
        let frame = request(&["2", "40"]);
        session.handle_input(Instant::now(), &frame[..7], &mut out);
        assert!(!out.has_actions() && session.wants_input());
        session.handle_input(Instant::now(), &frame[7..], &mut out);
        assert!(!session.wants_input(), "nothing is read while an agent runs");
        complete(&mut session, &mut out);
        let Response::Done(outcome) = answer(&mut out) else { panic!("done") };
        assert_eq!(outcome.results, [Value::I32(42)]);
        assert!(session.wants_input() && !out.is_closed());

        session.handle_input(Instant::now(), &request(&["1", "x"]), &mut out);
        complete(&mut session, &mut out);
        assert_eq!(answer(&mut out), Response::Refused(r#"argument 2 ("x") is not an i32"#.into()));
    }

    #[test]
    fn a_peer_that_closes_after_its_request_still_gets_the_answer() {
        let (mut session, mut out) = (session(), Out::new());
        session.handle_input(Instant::now(), &request(&["1", "2"]), &mut out);
        session.handle_read_closed(Instant::now(), &mut out);
        assert!(!out.is_closed());
        complete(&mut session, &mut out);
        assert!(matches!(answer(&mut out), Response::Done(_)));
        assert!(out.is_closed());
    }

    #[test]
    fn fetches_are_answered_at_once_and_a_run_after_them_starts() {
        let (mut session, mut out) = (session(), Out::new());
        let wasm = wat::parse_str(SUM).unwrap();
        let id = session.host.install(&wasm).unwrap();
        let mut frames = encode(&Request::Fetch(id.0));
        frames.extend(encode(&Request::Fetch([7; 32])));
        frames.extend(request(&["1", "2"]));
        session.handle_input(Instant::now(), &frames, &mut out);
        assert_eq!(answer(&mut out), Response::Module(wasm));
        let Response::Refused(reason) = answer(&mut out) else { panic!("refused") };
        assert_eq!(reason, format!("no module {} is held on this host", crate::ModuleId([7; 32])));
        assert!(!session.wants_input(), "the run started");
        complete(&mut session, &mut out);
        assert!(matches!(answer(&mut out), Response::Done(_)));
    }

    #[test]
    fn each_run_gets_the_services_job_limits() {
        let trust = Trust::new().unsigned(Unsigned::Allow);
        let host = Host::new(HostConfig { trust, ..HostConfig::default() }).unwrap();
        let tight = crate::Limits { fuel: 1, ..crate::Limits::default() };
        let service = AgentService::new(Arc::new(host), Limits::default()).with_job_limits(tight);
        let info = ConnInfo { id: SessionId(1), peer: None, wall: std::time::SystemTime::now(), seed: 0 };
        let (mut session, mut out) = (service.new_session(&info, Instant::now()), Out::new());
        session.handle_input(Instant::now(), &request(&["1", "2"]), &mut out);
        complete(&mut session, &mut out);
        let Response::Refused(reason) = answer(&mut out) else { panic!("stopped") };
        assert!(reason.contains("ran out of fuel"), "{reason}");
    }

    #[test]
    fn a_bad_frame_or_body_is_refused_and_closed() {
        let (mut session, mut out) = (session(), Out::new());
        session.handle_input(Instant::now(), b"GET / HTTP/1.1\r\n", &mut out);
        let Response::Refused(reason) = answer(&mut out) else { panic!("refused") };
        assert!(reason.starts_with("bad frame: "), "{reason}");
        assert!(out.is_closed());

        let (mut session, mut out) = (self::session(), Out::new());
        let mut frame = Vec::new();
        FRAMING.encode(&[7, 7, 7], &mut frame).unwrap();
        session.handle_input(Instant::now(), &frame, &mut out);
        let Response::Refused(reason) = answer(&mut out) else { panic!("refused") };
        assert!(reason.starts_with("bad request: "), "{reason}");
        assert!(out.is_closed());
    }
}
