//! One side alone, fed lines by hand: protocol errors, timeouts, shutdown, end of file, and a
//! proptest of arbitrary input.

use proptest::prelude::*;

use super::*;

/// A session driven by hand; hub requests are answered at once by a fresh counter.
struct Lone<S: Session> {
    session: S,
    out: crate::Out<S>,
    t0: Instant,
    answer: fn(S::Request, &mut GameCounter) -> S::Message,
    hub: GameCounter,
    log: Vec<(Level, String)>,
}

impl<S: Session> Lone<S> {
    fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Perform the queued actions, then return (and consume) what the session sent.
    fn drain(&mut self, now: Instant) -> String {
        let mut actions = Vec::new();
        while self.out.has_actions() {
            self.out.take_actions(&mut actions);
            for action in actions.drain(..) {
                match action {
                    Action::Hub(request) => {
                        let msg = (self.answer)(request, &mut self.hub);
                        self.session.handle_message(now, msg, &mut self.out);
                    }
                    Action::Log(level, line) => self.log.push((level, line)),
                    _ => panic!("pingpong asks only the hub and the log"),
                }
            }
        }
        let sent = String::from_utf8(self.out.pending().to_vec()).unwrap();
        self.out.consume(sent.len());
        sent
    }

    fn feed(&mut self, ms: u64, bytes: &str) -> String {
        let now = self.at(ms);
        self.session.handle_input(now, bytes.as_bytes(), &mut self.out);
        self.drain(now)
    }

    fn timeout(&mut self, ms: u64) -> String {
        let now = self.at(ms);
        self.session.handle_timeout(now, &mut self.out);
        self.drain(now)
    }

    fn logged(&self, level: Level) -> Vec<&str> {
        self.log.iter().filter(|(l, _)| *l == level).map(|(_, line)| line.as_str()).collect()
    }
}

fn lone_server(options: Options, limits: Limits, seed: u64) -> Lone<ServerSession> {
    let t0 = Instant::now();
    let service = PingPong { limits, options };
    let mut session = service.new_session(&info(1, seed), t0);
    let mut out = Output::new();
    session.handle_open(t0, &mut out);
    let answer = |_: NextGame, hub: &mut GameCounter| {
        let mut msgs = crate::HubOutput::new();
        hub.handle_request(Instant::now(), SessionId(1), NextGame, &mut msgs);
        msgs.drain_messages().next().expect("an answer").1
    };
    Lone { session, out, t0, answer, hub: GameCounter::default(), log: Vec::new() }
}

fn lone_client(options: Options, limits: Limits, seed: u64) -> (Lone<Client>, String) {
    let t0 = Instant::now();
    let mut session = Client::new(&options, &limits, seed, t0);
    let mut out = Output::new();
    session.handle_open(t0, &mut out);
    let answer = |n: Nothing, _: &mut GameCounter| match n {};
    let mut lone = Lone { session, out, t0, answer, hub: GameCounter::default(), log: Vec::new() };
    let hello = lone.drain(t0);
    (lone, hello)
}

/// A server that won ping (toss 0 against 1) and holds nothing yet: it waits for the ball.
fn server_playing_ping(options: Options) -> Lone<ServerSession> {
    let mut s = lone_server(options, Limits::default(), seed_drawing(0));
    assert_eq!(s.feed(0, "PINGPONG 3\n"), "PINGPONG 3 GAME 1\nTOSS 0\n");
    assert_eq!(s.feed(0, "TOSS 1\n"), "");
    s
}

#[test]
fn the_service() {
    let service = PingPong::default();
    assert_eq!(service.name(), "pingpong");
    assert_eq!(service.refusal(), b"ERROR server busy\n");
    assert_eq!(service.options, Options::default());
}

#[test]
fn bad_hellos_are_refused_without_a_game() {
    for (hello, answer) in [
        ("HELLO\n", "ERROR expected PINGPONG 3\n"),
        ("PINGPONG 2\n", "ERROR unsupported version\n"),
        ("TOSS 1\n", "ERROR expected PINGPONG 3\n"),
        ("PINGPONG 3\r\nTOSS 1\n", "ERROR unexpected line before the game number\n"),
    ] {
        let mut s = lone_server(quick(None), Limits::default(), 0);
        s.answer = |_, _| panic!("answered below");
        let now = s.at(0);
        s.session.handle_input(now, hello.as_bytes(), &mut s.out);
        let mut actions = Vec::new();
        s.out.take_actions(&mut actions);
        assert_eq!(String::from_utf8_lossy(s.out.pending()), answer);
        assert!(s.out.is_closed());
        // A game number arriving after the refusal is dropped.
        s.session.handle_message(now, Game(9), &mut s.out);
        assert_eq!(String::from_utf8_lossy(s.out.pending()), answer);
        assert_eq!(s.session.poll_timeout(), None);
    }
}

#[test]
fn wrong_messages_mid_game_end_it() {
    for (line, error) in [
        ("PING 1\n", "ERROR unexpected PING 1\n"),
        ("PONG 1\n", "ERROR unexpected PONG 1\n"),
        ("BALL BALL\n", "ERROR unreadable line\n"),
        ("\n", "ERROR unreadable line\n"),
    ] {
        let mut s = server_playing_ping(quick(None));
        assert_eq!(s.feed(0, line), error);
        assert!(s.out.is_closed());
        assert_eq!(s.logged(Level::Info).last(), Some(&"Game #1 Over!"));
    }
    // The pong must answer the last ping.
    let mut s = server_playing_ping(quick(None));
    assert_eq!(s.feed(0, "BALL\n"), "PING 1\n");
    assert_eq!(s.feed(0, "PONG 2\n"), "ERROR unexpected PONG 2\n");
    // Too long a line, even without its newline.
    let mut s = server_playing_ping(quick(None));
    assert_eq!(s.feed(0, &"x".repeat(200)), "ERROR line too long\n");
    assert!(s.out.is_closed());
}

#[test]
fn peer_goodbyes_and_errors_end_the_game() {
    let mut s = server_playing_ping(quick(None));
    assert_eq!(s.feed(0, "BYE\n"), "");
    assert!(s.out.is_closed());
    let mut s = server_playing_ping(quick(None));
    assert_eq!(s.feed(0, "ERROR tired\n"), "");
    assert!(s.out.is_closed());
    assert_eq!(s.logged(Level::Error), ["Game #1 Server received error: tired"]);
    let mut s = server_playing_ping(quick(None));
    s.session.handle_read_closed(s.at(0), &mut s.out);
    assert_eq!(s.drain(s.t0), "");
    assert!(s.out.is_closed());
    assert_eq!(s.logged(Level::Info).last(), Some(&"Game #1 Over!"));
}

#[test]
fn idle_and_read_timeouts() {
    let limits = Limits { idle_timeout: Duration::from_secs(5), read_timeout: Duration::from_secs(2), max_request: 4 };
    // Before the hello: refused, no game.
    let mut s = lone_server(quick(None), limits.clone(), 0);
    assert_eq!(s.session.poll_timeout(), Some(s.at(5000)));
    assert_eq!(s.timeout(4999), "", "spurious timeouts are harmless");
    assert_eq!(s.timeout(5000), "ERROR idle timeout\n");
    assert!(s.logged(Level::Info).is_empty());
    // Mid-game: the clock restarts when the game number arrives.
    let mut s = lone_server(quick(None), limits.clone(), 0);
    s.feed(1000, "PINGPONG 3\n");
    assert_eq!(s.session.poll_timeout(), Some(s.at(6000)));
    assert_eq!(s.timeout(6000), "ERROR idle timeout\n");
    assert_eq!(s.logged(Level::Info).last(), Some(&"Game #1 Over!"));
    // A line that never ends.
    let mut s = lone_server(quick(None), limits.clone(), 0);
    s.feed(0, "PINGPONG 3\nTOS");
    assert_eq!(s.session.poll_timeout(), Some(s.at(2000)));
    assert_eq!(s.timeout(2000), "ERROR read timeout\n");
    // The client times out a silent server too.
    let (mut c, _) = lone_client(quick(None), limits, 0);
    assert_eq!(c.timeout(5000), "ERROR idle timeout\n");
    assert_eq!(c.session.failure(), Some("idle timeout"));
}

#[test]
fn a_delayed_hit_waits_for_its_deadline() {
    let mut s = server_playing_ping(Options { delay: Duration::from_millis(250), ..quick(None) });
    assert_eq!(s.feed(100, "BALL\n"), "");
    assert_eq!(s.session.poll_timeout(), Some(s.at(350)));
    assert_eq!(s.timeout(349), "");
    assert_eq!(s.timeout(350), "PING 1\n");
    assert_eq!(s.session.poll_timeout(), Some(s.at(350) + Limits::default().idle_timeout));
}

#[test]
fn shutdown_says_goodbye() {
    let mut s = server_playing_ping(quick(None));
    s.session.handle_shutdown(s.at(0), &mut s.out);
    assert_eq!(s.drain(s.t0), "BYE\n");
    assert!(s.out.is_closed());
    assert_eq!(s.logged(Level::Info).last(), Some(&"Game #1 Over!"));
    // Before any game: an error line, not a goodbye.
    let mut s = lone_server(quick(None), Limits::default(), 0);
    s.session.handle_shutdown(s.at(0), &mut s.out);
    assert_eq!(s.drain(s.t0), "ERROR server shutting down\n");
    // A whole match: the client ends normally when the server stops.
    let mut m = Match::with(quick(None), 3, quick(None), 4);
    let mut hub = GameCounter::default();
    m.play_until(&mut hub, |m| m.server.times("sent").len() >= 3);
    m.server.session.handle_shutdown(m.now, &mut m.server.out);
    m.play(&mut hub);
    assert!(m.server.sent().ends_with("BYE\n"));
    assert_eq!(m.client.console().last(), Some(&"Game Over!"));
    assert_eq!(m.client.session.failure(), None);
}

#[test]
fn client_ties_then_serves_with_injected_lines() {
    let (mut c, hello) = lone_client(quick(None), Limits::default(), 5);
    assert_eq!(hello, "PINGPONG 3\n");
    let toss = c.feed(0, "PINGPONG 3 GAME 7\n");
    let mine: u64 = toss.strip_prefix("TOSS ").unwrap().trim_end().parse().unwrap();
    let again = c.feed(0, &format!("TOSS {mine}\n"));
    let mine2: u64 = again.strip_prefix("TOSS ").unwrap().trim_end().parse().unwrap();
    assert_eq!(c.feed(0, &format!("TOSS {}\n", mine2 + 1)), "PING 1\n");
    assert_eq!(
        c.logged(Level::Info),
        [
            "Game #7".to_owned(),
            format!("Client coin toss:  my number: {mine} their number: {mine}"),
            format!("Client coin toss:  my number: {mine2} their number: {}", mine2 + 1),
            "Coin toss over: Client plays ping".to_owned(),
            "Client sent ping".to_owned(),
        ]
    );
}

#[test]
fn client_refused_or_confused() {
    let (mut c, _) = lone_client(quick(None), Limits::default(), 0);
    assert_eq!(c.feed(0, "ERROR server busy\n"), "");
    assert!(c.out.is_closed());
    assert_eq!(c.session.failure(), Some("server busy"));
    assert!(!c.logged(Level::Info).contains(&"Game Over!"));
    let (mut c, _) = lone_client(quick(None), Limits::default(), 0);
    assert_eq!(c.feed(0, "PINGPONG 4 GAME 1\n"), "ERROR unsupported version\n");
    let (mut c, _) = lone_client(quick(None), Limits::default(), 0);
    assert_eq!(c.feed(0, "HELLO\n"), "ERROR expected PINGPONG 3 GAME\n");
    let (mut c, _) = lone_client(quick(None), Limits::default(), 0);
    c.session.handle_read_closed(c.at(0), &mut c.out);
    assert_eq!(c.session.failure(), Some("the server closed the connection"));
}

/// Input chunks: mostly protocol lines (to reach every state), some arbitrary bytes.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    let lines = [
        "PINGPONG 3\n",
        "PINGPONG 3 GAME 1\n",
        "TOSS 0\n",
        "TOSS 1\n",
        "TOSS 9\n",
        "BALL\n",
        "PING 1\n",
        "PING 2\n",
        "PONG 1\n",
        "PONG 2\n",
        "BYE\n",
        "ERROR x\n",
        "\n",
        "\r\n",
        "PING",
    ];
    prop_oneof![
        3 => proptest::sample::select(lines.to_vec()).prop_map(|l| l.as_bytes().to_vec()),
        1 => proptest::collection::vec(any::<u8>(), 1..100),
    ]
}

proptest! {
    #[test]
    fn server_survives_any_input(
        chunks in proptest::collection::vec(chunk(), 0..40),
        gaps in proptest::collection::vec(0u64..1500, 40),
        seed: u64,
    ) {
        let limits = Limits { idle_timeout: Duration::from_secs(1), read_timeout: Duration::from_millis(500), max_request: 64 };
        let options = Options { delay: Duration::from_millis(100), hits: Some(3), ..Options::default() };
        let mut s = lone_server(options, limits, seed);
        let (mut now, mut sent, mut lines) = (0, 0, 0);
        for (chunk, gap) in chunks.iter().zip(&gaps) {
            now += gap;
            if s.session.poll_timeout().is_some_and(|t| t <= s.at(now)) {
                sent += s.timeout(now).len();
            }
            if s.out.is_closed() {
                prop_assert_eq!(s.session.poll_timeout(), None);
                break;
            }
            lines += chunk.iter().filter(|&&b| b == b'\n').count();
            let at = s.at(now);
            s.session.handle_input(at, chunk, &mut s.out);
            sent += s.drain(at).len();
            // Each line, and each deadline, answers with at most one line of our own (the
            // welcome comes with the first toss).
            prop_assert!(sent <= 80 * (lines + 2), "{} bytes sent for {} lines", sent, lines);
        }
        prop_assert!(s.hub.last <= 1, "one game per connection");
    }
}
