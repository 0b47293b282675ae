//! Whole games: who plays ping, ties, hits, delays, game numbers.

use super::*;

#[test]
fn server_plays_ping_with_the_course_console_lines() {
    let mut m = Match::with(quick(None), seed_drawing(0), quick(Some(2)), seed_drawing(1));
    m.chunk = 1;
    m.play(&mut GameCounter::default());
    assert_eq!(
        m.server.console(),
        [
            "Starting game #1 with client /127.0.0.1",
            "Server coin toss:  my number: 0 their number: 1",
            "Coin toss over: Server plays ping",
            "Game #1 Server sent ping",
            "Game #1 Server received pong",
            "Game #1 Server sent ping",
            "Game #1 Server received pong",
            "Game #1 Server sent ping",
            "Game #1 Over!",
        ]
    );
    assert_eq!(
        m.client.console(),
        [
            "Game #1",
            "Client coin toss:  my number: 1 their number: 0",
            "Coin toss over: Client plays pong",
            "Client received ping",
            "Client sent pong",
            "Client received ping",
            "Client sent pong",
            "Client received ping",
            "Game Over!",
        ]
    );
    assert_eq!(m.client.sent(), "PINGPONG 3\nTOSS 1\nBALL\nPONG 1\nPONG 2\nBYE\n");
    assert_eq!(m.server.sent(), "PINGPONG 3 GAME 1\nTOSS 0\nPING 1\nPING 2\nPING 3\n");
    assert_eq!(m.client.session.failure(), None);
}

#[test]
fn client_plays_ping_and_the_server_runs_out_of_hits() {
    let mut m = Match::with(quick(Some(1)), seed_drawing(1), quick(None), seed_drawing(0));
    m.play(&mut GameCounter::default());
    assert_eq!(
        m.server.console(),
        [
            "Starting game #1 with client /127.0.0.1",
            "Server coin toss:  my number: 1 their number: 0",
            "Coin toss over: Server plays pong",
            "Game #1 Server received ping",
            "Game #1 Server sent pong",
            "Game #1 Server received ping",
            "Game #1 Over!",
        ]
    );
    assert_eq!(
        m.client.console(),
        [
            "Game #1",
            "Client coin toss:  my number: 0 their number: 1",
            "Coin toss over: Client plays ping",
            "Client sent ping",
            "Client received pong",
            "Client sent ping",
            "Game Over!",
        ]
    );
    assert_eq!(m.client.sent(), "PINGPONG 3\nTOSS 0\nPING 1\nPING 2\n");
    assert_eq!(m.server.sent(), "PINGPONG 3 GAME 1\nTOSS 1\nPONG 1\nBYE\n");
}

#[test]
fn zero_hits_ends_the_game_at_the_first_turn() {
    // The client serves but may not hit: it says goodbye instead.
    let mut m = Match::with(quick(None), seed_drawing(1), quick(Some(0)), seed_drawing(0));
    m.play(&mut GameCounter::default());
    assert_eq!(m.client.sent(), "PINGPONG 3\nTOSS 0\nBYE\n");
    assert_eq!(m.server.console().last(), Some(&"Game #1 Over!"));
}

#[test]
fn ties_toss_again_and_the_smaller_number_plays_ping() {
    let mut tied = 0;
    for seed in 0..64u64 {
        let mut m = Match::with(quick(None), seed, quick(Some(2)), seed.wrapping_mul(7919) + 1);
        m.play(&mut GameCounter::default());
        let tosses: Vec<&str> = m.server.console().into_iter().filter(|l| l.contains("coin toss:")).collect();
        if tosses.len() > 1 {
            tied += 1;
        }
        // Every round but the last is a tie; the last decides.
        let numbers = |line: &str| -> (u64, u64) {
            let words: Vec<&str> = line.split(' ').collect();
            (words[6].parse().unwrap(), words[9].parse().unwrap())
        };
        for line in &tosses[..tosses.len() - 1] {
            let (mine, theirs) = numbers(line);
            assert_eq!(mine, theirs);
        }
        let (mine, theirs) = numbers(tosses[tosses.len() - 1]);
        let server_pings = m.server.console().contains(&"Coin toss over: Server plays ping");
        assert_eq!(server_pings, mine < theirs);
        let client_pongs = m.client.console().contains(&"Coin toss over: Client plays pong");
        assert_eq!(server_pings, client_pongs, "exactly one side plays ping");
        assert_eq!(m.client.session.failure(), None);
        assert_eq!(m.client.console().last(), Some(&"Game Over!"));
    }
    assert!(tied > 5, "numbers from {{0, 1}} tie half the time, got {tied} tied games of 64");
}

#[test]
fn endless_ties_give_up() {
    let always = Options { toss_range: 1, max_tosses: 5, ..quick(None) };
    let mut m = Match::with(always.clone(), 1, always, 2);
    m.play(&mut GameCounter::default());
    for console in [m.server.console(), m.client.console()] {
        assert_eq!(console.iter().filter(|l| l.contains("coin toss:  my number: 0 their number: 0")).count(), 5);
        assert!(console.last().unwrap().ends_with("Over!"));
    }
    assert!(m.server.sent().ends_with("TOSS 0\nERROR too many tied tosses\n"));
    assert!(m.client.sent().ends_with("TOSS 0\nERROR too many tied tosses\n"));
    assert_eq!(m.client.session.failure(), Some("too many tied tosses"));
}

#[test]
fn delays_are_honoured_on_the_virtual_clock() {
    let server = Options { delay: Duration::from_millis(100), ..quick(None) };
    let client = Options { delay: Duration::from_millis(30), ..quick(Some(3)) };
    let mut m = Match::with(server, seed_drawing(0), client, seed_drawing(1));
    m.play(&mut GameCounter::default());
    let ms = |v: Vec<Duration>| v.into_iter().map(|d| d.as_millis()).collect::<Vec<_>>();
    assert_eq!(ms(m.server.times("sent ping")), [100, 230, 360, 490]);
    assert_eq!(ms(m.client.times("sent pong")), [130, 260, 390]);
    assert_eq!(ms(m.client.times("Game Over!")), [490], "no delay before the goodbye");
    assert_eq!(ms(m.server.times("Over!")), [490]);
}

#[test]
fn a_held_ball_outlasts_the_idle_timeout() {
    // The server holds the ball for 10 s with a 5 s idle timeout: the client is not idle, it
    // is waiting for us.
    let service = PingPong {
        limits: Limits { idle_timeout: Duration::from_secs(5), ..Limits::default() },
        options: Options { delay: Duration::from_secs(10), ..quick(Some(1)) },
    };
    let mut m = Match::new(1, &service, seed_drawing(0), &quick(None), seed_drawing(1));
    m.play(&mut GameCounter::default());
    assert_eq!(m.server.times("sent ping"), [Duration::from_secs(10)]);
    assert_eq!(m.client.session.failure(), None);
}

#[test]
fn game_numbers_are_unique_and_increasing_across_concurrent_games() {
    let service = PingPong { limits: Limits::default(), options: quick(Some(4)) };
    let mut hub = GameCounter::default();
    let mut matches: Vec<Match> = Vec::new();
    // The number each game got, in the order the hub handed them out.
    let mut issued = Vec::new();
    let game_of = |m: &Match| -> Option<u64> {
        let start = m.server.console().into_iter().find(|l| l.starts_with("Starting game #"))?;
        start.strip_prefix("Starting game #")?.split(' ').next()?.parse().ok()
    };
    // Games start at staggered moments and interleave, bytes in different chunk sizes, so
    // they are not numbered in the order they connected.
    for round in 0..400 {
        if round % 2 == 0 && matches.len() < 6 {
            let id = matches.len() as u64;
            let mut m = Match::new(id, &service, id * 31, &quick(None), id * 17 + 5);
            m.chunk = 1 + id as usize * 2;
            matches.push(m);
        }
        for m in &mut matches {
            let before = game_of(m);
            m.step(&mut hub);
            if before.is_none()
                && let Some(game) = game_of(m)
            {
                issued.push(game);
            }
        }
    }
    assert_eq!(issued, [1, 2, 3, 4, 5, 6], "unique and increasing");
    let mut connected_order = Vec::new();
    for m in &mut matches {
        m.play(&mut hub);
        let game = game_of(m).unwrap();
        assert_eq!(m.client.console()[0], format!("Game #{game}"));
        assert_eq!(m.server.console().last().unwrap(), &format!("Game #{game} Over!"));
        connected_order.push(game);
    }
    assert_ne!(connected_order, [1, 2, 3, 4, 5, 6], "the test should interleave the hellos");
    assert_eq!(hub.report(Instant::now()).unwrap(), "pingpong: 6 games played");
}

#[test]
fn the_counter_crosses_a_process_boundary() {
    let bytes = postcard::to_stdvec(&NextGame).unwrap();
    assert_eq!(postcard::from_bytes::<NextGame>(&bytes).unwrap(), NextGame);
    let bytes = postcard::to_stdvec(&Game(42)).unwrap();
    assert_eq!(postcard::from_bytes::<Game>(&bytes).unwrap(), Game(42));
    let mut hub = GameCounter::default();
    let mut out = crate::HubOutput::new();
    for id in [7, 3, 7] {
        hub.handle_request(Instant::now(), SessionId(id), NextGame, &mut out);
    }
    assert_eq!(
        out.drain_messages().collect::<Vec<_>>(),
        [(SessionId(7), Game(1)), (SessionId(3), Game(2)), (SessionId(7), Game(3))]
    );
}
