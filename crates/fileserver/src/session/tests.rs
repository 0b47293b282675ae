//! The session and hub together, in memory, on a virtual clock: sessions' hub requests are
//! routed to a real [`LeaseHub`] and its messages delivered back, as a driver would.

use std::time::{Duration, Instant, SystemTime};

use warren_proto::{Action, ConnInfo, Hub, HubOutput, Job, Output, Service, Session, SessionId, Urgent};

use super::*;
use crate::auth::Access;
use crate::journal::MemJournal;
use crate::store::MemStore;
use crate::wire::{ErrorCode, Outcome, Reply, Request, Right};

const NEW: (u64, ClientKey) = (0, [0; 16]);

const BASE_MS: u64 = 1_700_000_000_000;

struct Conn {
    id: SessionId,
    session: FileSession,
    out: Out,
    got: Vec<u8>,
    gone: bool,
}

struct Sim {
    service: FileService,
    store: Arc<MemStore>,
    journal: MemJournal,
    hub: LeaseHub,
    t0: Instant,
    now: Instant,
    conns: Vec<Conn>,
}

/// A job's result, computed here and now.
pub(crate) fn run<D>(job: Job<D>) -> D {
    match job {
        Job::Blocking(work) => work(),
        Job::Future(_) => panic!("the file service starts blocking jobs only"),
    }
}

/// Run the hub's jobs (its journal appends) until it has none.
pub(crate) fn settle(hub: &mut LeaseHub, now: Instant, out: &mut HubOutput<LeaseHub>) {
    loop {
        let jobs: Vec<_> = out.drain_jobs().collect();
        if jobs.is_empty() {
            return;
        }
        for (token, job) in jobs {
            hub.handle_completion(now, token, run(job), out);
        }
    }
}

fn hub_from(journal: &MemJournal, t0: Instant) -> LeaseHub {
    LeaseHub::new(Box::new(journal.clone()), journal.records(), Duration::from_secs(30), (t0, BASE_MS))
}

impl Sim {
    fn new(limits: FileLimits) -> Self {
        Self::with_access(limits, Access::new(Right::Write, [5; 32]))
    }

    fn with_access(limits: FileLimits, access: Access) -> Self {
        let t0 = Instant::now();
        let store = Arc::new(MemStore::default());
        let journal = MemJournal::default();
        let service = FileService::new(store.clone(), hub_from(&journal, t0), limits, access);
        let hub = service.new_hub(t0);
        Self { service, store, journal, hub, t0, now: t0, conns: Vec::new() }
    }

    /// The server crashes (hub and sessions lost) and restarts `after` later from its journal.
    fn crash_and_restart(&mut self, after: Duration) {
        self.conns.clear();
        self.now += after;
        self.hub = LeaseHub::new(
            Box::new(self.journal.clone()),
            self.journal.records(),
            Duration::from_secs(30),
            (self.t0, BASE_MS),
        );
    }

    fn connect(&mut self) -> usize {
        let id = SessionId(self.conns.len() as u64 + 1);
        let info = ConnInfo { id, peer: None, wall: SystemTime::UNIX_EPOCH, seed: 0 };
        let session = self.service.new_session(&info, self.now);
        self.conns.push(Conn { id, session, out: Output::new(), got: Vec::new(), gone: false });
        self.conns.len() - 1
    }

    fn disconnect(&mut self, c: usize) {
        let id = self.conns[c].id;
        self.conns[c].gone = true;
        self.hub.handle_leave(self.now, id, &mut HubOutput::new());
    }

    fn send(&mut self, c: usize, bytes: &[u8]) {
        let now = self.now;
        let conn = &mut self.conns[c];
        conn.session.handle_input(now, bytes, &mut conn.out);
        self.pump();
    }

    fn request(&mut self, c: usize, request: Request) {
        let mut bytes = Vec::new();
        request.encode(&mut bytes);
        self.send(c, &bytes);
    }

    /// Move output to `got`, run jobs and hub requests (and the hub's jobs) until nothing
    /// moves, as a thread-based model would: every job inline, in order.
    fn pump(&mut self) {
        loop {
            let mut moved = false;
            for i in 0..self.conns.len() {
                let now = self.now;
                let conn = &mut self.conns[i];
                let pending = conn.out.pending().to_vec();
                conn.out.consume(pending.len());
                conn.got.extend_from_slice(&pending);
                if !pending.is_empty() && conn.out.is_flushed() {
                    moved = true;
                    conn.session.handle_drained(now, &mut conn.out);
                }
                let mut actions = Vec::new();
                conn.out.take_actions(&mut actions);
                for action in actions {
                    match action {
                        Action::Hub(request) => {
                            moved = true;
                            let mut msgs = HubOutput::new();
                            self.hub.handle_request(self.now, self.conns[i].id, request, &mut msgs);
                            settle(&mut self.hub, self.now, &mut msgs);
                            for (to, msg) in msgs.drain_messages() {
                                if let Some(dest) = self.conns.iter_mut().find(|c| c.id == to && !c.gone) {
                                    dest.session.handle_message(self.now, msg, &mut dest.out);
                                }
                            }
                        }
                        Action::Job(token, job) => {
                            moved = true;
                            let conn = &mut self.conns[i];
                            conn.session.handle_completion(now, token, run(job), &mut conn.out);
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// Every reply received so far (file bodies with their `File` frame), consumed.
    fn replies(&mut self, c: usize) -> Vec<(Reply, Vec<u8>)> {
        let got = std::mem::take(&mut self.conns[c].got);
        let mut at = 0;
        let mut replies = Vec::new();
        while let Some((reply, used)) = Reply::decode(&got[at..]).expect("the server sends valid frames") {
            at += used;
            let body = match &reply {
                Reply::File { size, .. } => {
                    let body = got[at..at + *size as usize].to_vec();
                    at += *size as usize;
                    body
                }
                _ => Vec::new(),
            };
            replies.push((reply, body));
        }
        assert_eq!(at, got.len(), "a partial frame");
        replies
    }

    fn only(&mut self, c: usize) -> Reply {
        let mut replies = self.replies(c);
        assert_eq!(replies.len(), 1, "{replies:?}");
        replies.remove(0).0
    }

    /// Upload `data`: the answer after `Ready`.
    fn put(&mut self, c: usize, path: &str, data: &[u8]) -> Reply {
        self.begin_put(c, path, data.len() as u64);
        self.send(c, data);
        self.only(c)
    }

    /// Send `Put` and take `Ready`: the upload's id.
    fn begin_put(&mut self, c: usize, path: &str, size: u64) -> u64 {
        self.request(c, Request::Put { size, path: path.into() });
        match self.only(c) {
            Reply::Ready { id } => id,
            other => panic!("not ready: {other:?}"),
        }
    }

    /// Say Hello as `client` (0: a new identity): every reply, and the identity welcomed.
    fn hello(&mut self, c: usize, identity: (u64, ClientKey)) -> (Vec<Reply>, (u64, ClientKey)) {
        self.request(c, Request::Hello { client: identity.0, key: identity.1 });
        let replies: Vec<Reply> = self.replies(c).into_iter().map(|(r, _)| r).collect();
        match replies.last() {
            Some(&Reply::Welcome { lease_ms: 30_000, client, key }) => (replies, (client, key)),
            other => panic!("no welcome: {other:?}"),
        }
    }
}

#[test]
fn upload_download_list_stat_delete() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    assert!(matches!(sim.put(c, "/docs/a.txt", b"hello"), Reply::Done { .. }));
    assert_eq!(sim.store.get("docs/a.txt").unwrap(), b"hello");
    sim.request(c, Request::Get { path: "docs/a.txt".into(), have: 0 });
    let (reply, body) = sim.replies(c).remove(0);
    assert!(matches!(reply, Reply::File { size: 5, lease_ms: 0, .. }), "no Hello, no lease: {reply:?}");
    assert_eq!(body, b"hello");
    sim.request(c, Request::List { path: "/".into(), after: String::new() });
    assert!(matches!(sim.only(c), Reply::List { entries, .. } if entries.len() == 1 && entries[0].is_dir));
    sim.request(c, Request::Stat { path: "/docs/a.txt".into() });
    assert!(matches!(sim.only(c), Reply::Stat(m) if m.size == 5 && !m.is_dir));
    sim.request(c, Request::Delete { path: "/docs/a.txt".into() });
    assert_eq!(sim.only(c), Reply::Deleted);
    sim.request(c, Request::Get { path: "docs/a.txt".into(), have: 0 });
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::NotFound, .. }));
}

#[test]
fn frames_in_any_chunking_get_the_same_answers() {
    let mut whole = Vec::new();
    Request::Put { size: 3, path: "/x".into() }.encode(&mut whole);
    whole.extend_from_slice(b"abc");
    Request::Stat { path: "/x".into() }.encode(&mut whole);
    Request::Get { path: "/x".into(), have: 0 }.encode(&mut whole);
    let mut expected = None;
    for chunk in [1, 2, 5, 7, whole.len()] {
        let mut sim = Sim::new(FileLimits::default());
        let c = sim.connect();
        whole.chunks(chunk).for_each(|piece| sim.send(c, piece));
        let kinds: Vec<String> = sim
            .replies(c)
            .iter()
            .map(|(r, body)| format!("{:?}", std::mem::discriminant(r)) + &body.len().to_string())
            .collect();
        assert_eq!(kinds.len(), 4, "chunks of {chunk}: Ready, Done, Stat, File");
        assert_eq!(expected.get_or_insert(kinds.clone()), &kinds);
    }
}

#[test]
fn bad_paths_and_bad_frames_are_refused_clearly() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    for path in ["../etc/passwd", "/.warren/leases.journal", "a//b", "a/../../b"] {
        sim.request(c, Request::Get { path: path.into(), have: 0 });
        assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::BadPath, .. }), "{path}");
    }
    // An upload to a bad path is refused and the connection closed (its body is not read).
    sim.request(c, Request::Put { size: 10, path: "../x".into() });
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::BadPath, .. }));
    assert!(sim.conns[c].out.is_closed());
    let c = sim.connect();
    sim.send(c, &[0, 0, 0, 1, 0x77]);
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::Protocol, .. }));
    assert!(sim.conns[c].out.is_closed());
    let c = sim.connect();
    sim.send(c, &[0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::Protocol, .. }), "a frame over the limit");
    let c = sim.connect();
    sim.request(c, Request::Put { size: 5 << 30, path: "/huge".into() });
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::TooLarge, .. }));
    assert_eq!(sim.store.partials(), 0);
}

#[test]
fn a_change_calls_back_every_cached_copy() {
    let mut sim = Sim::new(FileLimits::default());
    let (a, b) = (sim.connect(), sim.connect());
    sim.put(b, "/f", b"v1");
    let (replies, _) = sim.hello(a, NEW);
    assert_eq!(replies.len(), 1);
    sim.request(a, Request::Get { path: "/f".into(), have: 0 });
    let Reply::File { version, lease_ms: 30_000, .. } = sim.replies(a).remove(0).0 else { panic!("a leased file") };
    // Revalidation: the same version is not sent again, and the lease is renewed.
    sim.request(a, Request::Get { path: "/f".into(), have: version });
    assert_eq!(sim.only(a), Reply::NotModified { version, lease_ms: 30_000 });
    assert!(matches!(sim.put(b, "/f", b"v2"), Reply::Done { .. }));
    assert_eq!(sim.only(a), Reply::Callback { path: "/f".into() });
    // The callback was delivered: a second change has nobody to call.
    sim.put(b, "/f", b"v3");
    assert!(sim.replies(a).is_empty());
    assert_eq!(sim.hub.counts(), (0, 0));
}

#[test]
fn an_absent_client_is_owed_its_callback_until_its_lease_ends() {
    let mut sim = Sim::new(FileLimits::default());
    let (a, b) = (sim.connect(), sim.connect());
    sim.put(b, "/f", b"v1");
    sim.put(b, "/g", b"v1");
    let (_, me) = sim.hello(a, NEW);
    sim.request(a, Request::Get { path: "/f".into(), have: 0 });
    sim.request(a, Request::Get { path: "/g".into(), have: 0 });
    sim.replies(a);
    sim.disconnect(a);
    sim.put(b, "/f", b"v2");
    sim.put(b, "/g", b"v2");
    assert_eq!(sim.hub.counts(), (0, 2));
    // Back within the lease: the callbacks come before the welcome.
    sim.now += Duration::from_secs(10);
    let a = sim.connect();
    // Nobody else can take them: a Hello that does not prove the identity is denied.
    let thief = sim.connect();
    sim.request(thief, Request::Hello { client: me.0, key: [0; 16] });
    assert!(matches!(sim.only(thief), Reply::Error { code: ErrorCode::Denied, .. }));
    assert_eq!(sim.hub.counts(), (0, 2), "still owed");
    let (replies, again) = sim.hello(a, me);
    assert_eq!(again, me, "the same identity, welcomed back");
    assert_eq!(
        replies,
        [
            Reply::Callback { path: "/f".into() },
            Reply::Callback { path: "/g".into() },
            Reply::Welcome { lease_ms: 30_000, client: me.0, key: me.1 }
        ]
    );
    // Past the lease nothing is owed: the client's lease ended, so it revalidates anyway.
    sim.request(a, Request::Get { path: "/f".into(), have: 0 });
    sim.replies(a);
    sim.disconnect(a);
    sim.put(b, "/f", b"v3");
    sim.now += Duration::from_secs(31);
    let a = sim.connect();
    assert_eq!(sim.hello(a, me).0.len(), 1, "only the welcome");
}

#[test]
fn leases_and_owed_callbacks_survive_a_crash() {
    let mut sim = Sim::new(FileLimits::default());
    let (a, b) = (sim.connect(), sim.connect());
    sim.put(b, "/f", b"v1");
    let (_, me) = sim.hello(a, NEW);
    sim.request(a, Request::Get { path: "/f".into(), have: 0 });
    sim.replies(a);
    sim.crash_and_restart(Duration::from_secs(1));
    assert_eq!(sim.hub.counts(), (1, 0), "the lease was recovered");
    // A change after the restart still reaches the holder, now owed since it is away.
    let b = sim.connect();
    sim.put(b, "/f", b"v2");
    sim.crash_and_restart(Duration::from_secs(1));
    assert_eq!(sim.hub.counts(), (0, 1));
    let a = sim.connect();
    assert_eq!(sim.hello(a, me).0[0], Reply::Callback { path: "/f".into() });
}

#[test]
fn a_crash_between_intent_and_change_owes_the_callbacks() {
    let t0 = Instant::now();
    let journal = MemJournal::default();
    journal.0.lock().unwrap().extend([
        crate::Record::Grant { client: 0xa, path: "/f".into(), until_ms: BASE_MS + 30_000 },
        crate::Record::Grant { client: 0xb, path: "/g".into(), until_ms: BASE_MS + 30_000 },
        crate::Record::Intent { path: "/f".into() },
    ]);
    let hub = hub_from(&journal, t0);
    assert_eq!(hub.counts(), (1, 1), "/f may have changed: its holder is owed a callback");
    assert!(!journal.records().iter().any(|r| matches!(r, crate::Record::Intent { .. })), "the intent is resolved");
}

fn big_upload(sim: &mut Sim, c: usize) -> u64 {
    let id = sim.begin_put(c, "/big", 1 << 20);
    sim.send(c, &[7; 1000]);
    assert!(sim.replies(c).is_empty());
    assert_eq!(sim.store.partials(), 1);
    id
}

#[test]
fn a_control_cancel_mid_stream_stops_the_upload_and_the_connection_goes_on() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    let id = big_upload(&mut sim, c);
    assert_eq!(sim.service.uploads.cancel(id), Outcome::Stopped);
    assert_eq!(sim.store.partials(), 0, "the control thread removed the partial file");
    sim.send(c, &[7; 500]);
    assert_eq!(sim.only(c), Reply::Cancelled { id, received: 1000 });
    assert_eq!(sim.service.uploads.cancel(id), Outcome::Stopped, "a second cancel finds it stopped");
    // The rest of the declared body is dropped; a frame after it is answered.
    let mut rest = vec![7; (1 << 20) - 1500];
    Request::Stat { path: "/big".into() }.encode(&mut rest);
    sim.send(c, &rest);
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::NotFound, .. }), "nothing of it is visible");
}

#[test]
fn ids_are_the_servers_and_a_cancel_after_the_upload_is_too_late() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    assert_eq!(sim.service.uploads.cancel(5), Outcome::Unknown);
    let id = sim.begin_put(c, "/a", 3);
    assert_ne!(id, 5);
    sim.send(c, b"abc");
    assert!(matches!(sim.only(c), Reply::Done { .. }));
    assert_eq!(sim.service.uploads.cancel(id), Outcome::Completed);
    assert_eq!(sim.service.uploads.cancel(5), Outcome::Unknown, "an unknown id leaves nothing behind");
    assert_eq!(sim.store.get("/a").unwrap(), b"abc");
}

#[test]
fn urgent_data_cancels_at_the_pointer_and_frames_resume_after_the_mark() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    let id = big_upload(&mut sim, c);
    let (now, conn) = (sim.now, &mut sim.conns[c]);
    conn.session.handle_urgent(now, Urgent::Pointer, &mut conn.out);
    sim.pump();
    assert_eq!(sim.only(c), Reply::Cancelled { id, received: 1000 });
    assert_eq!(sim.store.partials(), 0);
    assert_eq!(sim.service.uploads.cancel(id), Outcome::Stopped);
    // A moved pointer changes nothing; bytes before the mark, even half a frame, are dropped.
    let (now, conn) = (sim.now, &mut sim.conns[c]);
    conn.session.handle_urgent(now, Urgent::Pointer, &mut conn.out);
    sim.send(c, &[7; 70_000]);
    sim.send(c, &[0, 0, 0, 9]);
    let (now, conn) = (sim.now, &mut sim.conns[c]);
    conn.session.handle_urgent(now, Urgent::Mark(0xff), &mut conn.out);
    sim.request(c, Request::Stat { path: "/big".into() });
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::NotFound, .. }));
    assert!(!sim.conns[c].out.is_closed());
}

#[test]
fn the_upload_rate_holds_input_back_until_the_clock_catches_up() {
    let mut sim = Sim::new(FileLimits { upload_rate: 1 << 20, ..FileLimits::default() });
    let c = sim.connect();
    let id = sim.begin_put(c, "/slow", 1 << 20);
    assert!(sim.conns[c].session.wants_input());
    sim.send(c, &vec![1; 200 * 1024]);
    let session = &sim.conns[c].session;
    assert!(!session.wants_input(), "past the burst at t=0");
    let at = session.poll_timeout().expect("a time to resume");
    assert!(at <= sim.now + CANCEL_POLL);
    // A control cancel while paused is answered at the next timeout, without more input.
    sim.service.uploads.cancel(id);
    sim.now = at;
    let (now, conn) = (sim.now, &mut sim.conns[c]);
    conn.session.handle_timeout(now, &mut conn.out);
    sim.pump();
    assert_eq!(sim.only(c), Reply::Cancelled { id, received: 200 * 1024 });
    assert!(sim.conns[c].session.wants_input());
}

#[test]
fn a_connection_lost_mid_upload_leaves_nothing() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    big_upload(&mut sim, c);
    let (now, conn) = (sim.now, &mut sim.conns[c]);
    conn.session.handle_read_closed(now, &mut conn.out);
    assert!(conn.out.is_closed());
    assert_eq!(sim.store.partials(), 0);
    assert!(sim.store.get("/big").is_none());
}

/// Jobs held back as a slow disk would: a control cancel is answered while a write is in
/// flight, and the write that comes back late is dropped with its upload.
#[test]
fn a_cancel_is_answered_while_a_write_is_in_flight() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    let now = sim.now;
    let mut put = Vec::new();
    Request::Put { size: 1 << 20, path: "/slow".into() }.encode(&mut put);
    let conn = &mut sim.conns[c];
    let mut jobs = Vec::new();
    let step = |conn: &mut Conn, jobs: &mut Vec<(Token, Job<FileDone>)>| {
        let mut actions = Vec::new();
        conn.out.take_actions(&mut actions);
        jobs.extend(actions.into_iter().filter_map(|a| match a {
            Action::Job(token, job) => Some((token, job)),
            _ => None,
        }));
    };
    conn.session.handle_input(now, &put, &mut conn.out);
    step(conn, &mut jobs);
    let (token, begin) = jobs.pop().expect("the upload begins in a job");
    conn.session.handle_completion(now, token, run(begin), &mut conn.out);
    let Some((Reply::Ready { id }, _)) = Reply::decode(conn.out.pending()).unwrap() else { panic!("ready") };
    conn.out.consume(conn.out.pending().len());
    conn.session.handle_input(now, &[1; 1000], &mut conn.out);
    step(conn, &mut jobs);
    assert_eq!(jobs.len(), 1, "one write in flight");
    conn.session.handle_input(now, &[1; 500], &mut conn.out);
    step(conn, &mut jobs);
    assert_eq!(jobs.len(), 1, "bytes gather behind the write in flight");
    assert!(conn.session.wants_input());
    assert_eq!(sim.service.uploads.cancel(id), Outcome::Stopped);
    let conn = &mut sim.conns[c];
    let at = conn.session.poll_timeout().expect("the session looks for cancels");
    assert!(at <= now + CANCEL_POLL);
    conn.session.handle_timeout(at, &mut conn.out);
    sim.pump();
    assert_eq!(sim.only(c), Reply::Cancelled { id, received: 0 });
    // The write comes back late: stale, dropped, no second answer.
    let (token, write) = jobs.pop().unwrap();
    let conn = &mut sim.conns[c];
    conn.session.handle_completion(now, token, run(write), &mut conn.out);
    sim.pump();
    assert!(sim.replies(c).is_empty());
    assert_eq!(sim.store.partials(), 0);
    let mut rest = vec![1; (1 << 20) - 1500];
    Request::Stat { path: "/slow".into() }.encode(&mut rest);
    sim.send(c, &rest);
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::NotFound, .. }));
}

/// A streaming client's next bytes after a control cancel bring the answer at once: no wait
/// for the write in flight or for the next look at the flag.
#[test]
fn a_cancel_is_answered_at_the_next_input() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    let now = sim.now;
    let mut put = Vec::new();
    Request::Put { size: 1 << 20, path: "/streaming".into() }.encode(&mut put);
    let conn = &mut sim.conns[c];
    conn.session.handle_input(now, &put, &mut conn.out);
    let mut actions = Vec::new();
    conn.out.take_actions(&mut actions);
    let Some(Action::Job(token, begin)) = actions.pop() else { panic!("the upload begins in a job") };
    conn.session.handle_completion(now, token, run(begin), &mut conn.out);
    let Some((Reply::Ready { id }, _)) = Reply::decode(conn.out.pending()).unwrap() else { panic!("ready") };
    conn.out.consume(conn.out.pending().len());
    actions.clear();
    conn.session.handle_input(now, &[1; 1000], &mut conn.out);
    conn.out.take_actions(&mut actions);
    assert_eq!(actions.iter().filter(|a| matches!(a, Action::Job(..))).count(), 1, "one write in flight");
    assert_eq!(sim.service.uploads.cancel(id), Outcome::Stopped);
    let conn = &mut sim.conns[c];
    conn.session.handle_input(now, &[1; 500], &mut conn.out);
    sim.pump();
    assert_eq!(sim.only(c), Reply::Cancelled { id, received: 0 });
    // The rest of the declared body is skipped, and the connection goes on.
    let mut rest = vec![1; (1 << 20) - 1500];
    Request::Stat { path: "/streaming".into() }.encode(&mut rest);
    sim.send(c, &rest);
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::NotFound, .. }));
}

/// Frames sent behind a request that waits are answered in order; past the bound the session
/// stops reading instead of buffering without end.
#[test]
fn frames_behind_a_waiting_request_wait_and_are_bounded() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    sim.put(c, "/a", b"abc");
    let now = sim.now;
    let mut frames = Vec::new();
    Request::Stat { path: "/a".into() }.encode(&mut frames);
    Request::Stat { path: "/b".into() }.encode(&mut frames);
    let conn = &mut sim.conns[c];
    conn.session.handle_input(now, &frames, &mut conn.out);
    let mut actions = Vec::new();
    conn.out.take_actions(&mut actions);
    assert_eq!(actions.len(), 1, "one request at a time");
    let filler = vec![0u8; WAIT_BUFFER];
    conn.session.handle_input(now, &filler, &mut conn.out);
    assert!(!conn.session.wants_input(), "input waits for the answer");
    let Some(Action::Job(token, job)) = actions.pop() else { panic!("a stat job") };
    conn.session.handle_completion(now, token, run(job), &mut conn.out);
    sim.pump();
    let replies = sim.replies(c);
    assert!(matches!(replies[0].0, Reply::Stat(_)));
    assert!(matches!(replies[1].0, Reply::Error { code: ErrorCode::NotFound, .. }));
}

/// Urgent data that comes while the upload is still being set up cancels it once it begins.
#[test]
fn urgent_data_before_the_upload_begins_cancels_it_when_it_does() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    let now = sim.now;
    let mut put = Vec::new();
    Request::Put { size: 1 << 20, path: "/early".into() }.encode(&mut put);
    put.extend_from_slice(&[3; 2000]);
    let conn = &mut sim.conns[c];
    conn.session.handle_input(now, &put, &mut conn.out);
    let mut actions = Vec::new();
    conn.out.take_actions(&mut actions);
    let Some(Action::Job(token, begin)) = actions.pop() else { panic!("the upload begins in a job") };
    conn.session.handle_urgent(now, Urgent::Pointer, &mut conn.out);
    conn.session.handle_completion(now, token, run(begin), &mut conn.out);
    sim.pump();
    assert!(matches!(sim.only(c), Reply::Cancelled { received: 0, .. }), "no Ready: it ends as it begins");
    assert_eq!(sim.store.partials(), 0);
    let conn = &mut sim.conns[c];
    conn.session.handle_urgent(now, Urgent::Mark(0xff), &mut conn.out);
    sim.request(c, Request::Stat { path: "/early".into() });
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::NotFound, .. }));
}

/// Anonymous clients read only (by default); a credential gives its right; Put and Delete
/// without the write right are denied clearly, before anything is stored.
#[test]
fn rights_come_from_credentials() {
    let (token, hash) = crate::auth::new_token().unwrap();
    let mut access = Access::new(Right::Read, [5; 32]);
    access.add_tokens(&format!("write {hash} alice")).unwrap();
    let mut sim = Sim::with_access(FileLimits::default(), access);
    let c = sim.connect();
    sim.request(c, Request::Delete { path: "/f".into() });
    assert!(
        matches!(sim.only(c), Reply::Error { code: ErrorCode::Denied, message } if message.contains("write right"))
    );
    sim.request(c, Request::Put { size: 3, path: "/f".into() });
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::Denied, .. }));
    assert!(sim.conns[c].out.is_closed(), "its body is not read");
    assert_eq!(sim.store.partials(), 0);
    let c = sim.connect();
    sim.request(c, Request::Auth { token: token.clone() });
    assert_eq!(sim.only(c), Reply::Authorized { right: Right::Write });
    assert!(matches!(sim.put(c, "/f", b"abc"), Reply::Done { .. }));
    let c = sim.connect();
    sim.request(c, Request::Auth { token: "not a token".into() });
    assert!(matches!(sim.only(c), Reply::Error { code: ErrorCode::Denied, .. }));
    assert!(sim.conns[c].out.is_closed());
}

/// Uploads in flight count against their client: one over the allowance is refused before its
/// partial file exists, and the allowance comes back when an upload ends.
#[test]
fn uploads_in_flight_are_bounded_per_client() {
    let mut sim = Sim::new(FileLimits { max_in_flight: 1500, ..FileLimits::default() });
    let (a, b) = (sim.connect(), sim.connect());
    sim.begin_put(a, "/one", 1000);
    sim.request(b, Request::Put { size: 1000, path: "/two".into() });
    assert!(matches!(sim.only(b), Reply::Error { code: ErrorCode::Quota, .. }));
    assert_eq!(sim.store.partials(), 1);
    sim.send(a, &[1; 1000]);
    assert!(matches!(sim.only(a), Reply::Done { .. }));
    let b = sim.connect();
    assert!(matches!(sim.put(b, "/two", &[2; 1000]), Reply::Done { .. }));
}

/// A directory is listed page by page; each answer fits in a page.
#[test]
fn listings_are_paged() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    let names: Vec<String> = (0..300).map(|i| format!("{i:03}-{}", "n".repeat(100))).collect();
    for name in &names {
        sim.store.create(&FilePath::parse(name).unwrap(), 0).unwrap().commit().unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..10 {
        let after = seen.last().cloned().unwrap_or_default();
        sim.request(c, Request::List { path: "/".into(), after });
        let mut bytes = Vec::new();
        let Reply::List { truncated, entries } = sim.only(c) else { panic!("a listing") };
        Reply::List { truncated, entries: entries.clone() }.encode(&mut bytes);
        assert!(bytes.len() <= crate::wire::LIST_PAGE);
        seen.extend(entries.into_iter().map(|e| e.name));
        if !truncated {
            break;
        }
    }
    assert_eq!(seen, names);
}

/// A peer that asks and never reads: once the answers waiting for it reach the bound, the
/// session answers nothing more and takes no input until they drain.
#[test]
fn answers_waiting_for_the_peer_are_bounded() {
    let mut sim = Sim::new(FileLimits::default());
    let c = sim.connect();
    for i in 0..200 {
        let name = format!("{i:03}-{}", "n".repeat(200));
        sim.store.create(&FilePath::parse(&name).unwrap(), 0).unwrap().commit().unwrap();
    }
    let mut asks = Vec::new();
    for _ in 0..1000 {
        Request::List { path: "/".into(), after: String::new() }.encode(&mut asks);
    }
    let now = sim.now;
    let conn = &mut sim.conns[c];
    conn.session.handle_input(now, &asks, &mut conn.out);
    // Run the jobs without sending anything.
    for _ in 0..1000 {
        let mut actions = Vec::new();
        conn.out.take_actions(&mut actions);
        let Some(Action::Job(token, job)) = actions.pop() else { break };
        conn.session.handle_completion(now, token, run(job), &mut conn.out);
    }
    assert!(conn.out.pending_len() < OUTPUT_LIMIT + crate::wire::LIST_PAGE as u64, "{}", conn.out.pending_len());
    assert!(!conn.session.wants_input());
    // Read: the rest is answered.
    sim.pump();
    assert_eq!(sim.replies(c).len(), 1000);
}

/// An upload body that stops coming is given up after the read timeout between bytes (not
/// the idle timeout), and its partial file goes.
#[test]
fn a_stalled_upload_body_is_given_up() {
    let limits = FileLimits { read_timeout: Duration::from_secs(2), ..FileLimits::default() };
    let mut sim = Sim::new(limits);
    let c = sim.connect();
    sim.begin_put(c, "/stall", 1 << 20);
    for _ in 0..3 {
        // Bytes that keep coming keep it alive, however long the whole takes.
        sim.now += Duration::from_secs(1);
        sim.send(c, &[1; 100]);
    }
    let at = sim.conns[c].session.poll_timeout().unwrap();
    assert!(at <= sim.now + Duration::from_secs(2));
    sim.now += Duration::from_secs(2);
    let (now, conn) = (sim.now, &mut sim.conns[c]);
    conn.session.handle_timeout(now, &mut conn.out);
    assert!(conn.out.is_closed());
    assert_eq!(sim.store.partials(), 0);
}
