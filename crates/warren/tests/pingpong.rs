//! pingpong v3 under every model with many concurrent clients: every game ends by itself
//! (`--hits`), game numbers are unique, at least 1, and ordered as the clients could observe
//! them; plus the course's client and server commands.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use support::pingpong::{Game, Play, play};
use support::{Server, command, run};

/// Concurrent clients per server.
const CLIENTS: usize = 24;

/// Start `CLIENTS` games at once (two waves, the second started only once the first all have
/// their numbers) and check what the clients saw.
fn many_games(model: &str) {
    // Small hits and delays: under `iterative` and `prefork` (4 processes) the clients queue.
    let server = Server::serve("pingpong", model, &["--hits", "2", "--delay", "1ms", "--processes", "4"]);
    let addr = server.addr;
    // Queued clients wait for the games before theirs: give them the time of all the games.
    let patience = Some(Duration::from_secs(30));
    let mut games: Vec<Game> = Vec::new();
    for wave in 0..2 {
        let start = Arc::new(Barrier::new(CLIENTS / 2));
        let players: Vec<_> = (0..CLIENTS / 2)
            .map(|i| {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    play(addr, Play { force_tie: (i + wave) % 4 == 0, patience })
                })
            })
            .collect();
        for (i, player) in players.into_iter().enumerate() {
            let game = player
                .join()
                .expect("client thread")
                .unwrap_or_else(|e| panic!("{model}: wave {wave} client {i}: {e}"));
            assert_eq!(game.server_hits, 2, "{model}: the server ends each game after its second hit: {game:?}");
            games.push(game);
        }
    }

    let numbers: Vec<u64> = games.iter().map(|g| g.number).collect();
    let unique: HashSet<u64> = numbers.iter().copied().collect();
    assert_eq!(unique.len(), CLIENTS, "{model}: game numbers are unique: {numbers:?}");
    assert!(numbers.iter().all(|&n| n >= 1), "{model}: game numbers start at 1: {numbers:?}");
    // Increasing in the order the clients got them. Two clients whose waits overlapped cannot
    // tell which was numbered first; when one had its number before the other even asked,
    // the first number must be the smaller.
    for a in &games {
        for b in &games {
            if a.numbered_at < b.hello_at {
                assert!(
                    a.number < b.number,
                    "{model}: game {} was numbered before game {} was asked for",
                    a.number,
                    b.number
                );
            }
        }
    }
    // The waves make that check bite: every number of the second wave is above the first's.
    let first_max = games[..CLIENTS / 2].iter().map(|g| g.number).max().unwrap();
    let second_min = games[CLIENTS / 2..].iter().map(|g| g.number).min().unwrap();
    assert!(first_max < second_min, "{model}: {numbers:?}");
    // No client left early, so no number was used up: exactly 1..=CLIENTS.
    assert_eq!(unique, (1..=CLIENTS as u64).collect(), "{model}: {numbers:?}");
    assert!(games.iter().any(|g| g.tosses > 1), "{model}: some tosses tied");

    let stopped = server.stop_clean();
    assert_eq!(stopped.counts(), (CLIENTS as u64, 0), "{model}: {}", stopped.stopped_line());
}

mod concurrent {
    per_model!(super::many_games);
}

/// The course's commands: `warren pingpong server` and `warren pingpong client` play whole
/// games; the client exits 0 and prints the course's lines.
fn course_commands(model: &str) {
    let server =
        Server::spawn(&["pingpong", "server", "127.0.0.1", "0", "--model", model, "--delay", "1ms", "--hits", "3"]);
    let port = server.addr.port().to_string();
    for game in 1..=2 {
        let client = command(&["pingpong", "client", "127.0.0.1", &port, "--delay", "1ms"]);
        let (status, out, err) = run(client, b"", Duration::from_secs(20));
        assert!(status.success(), "{model}: client exit {status:?}; stdout: {out}; stderr: {err}");
        assert!(out.lines().any(|l| l == format!("Game #{game}")), "{model}: {out}");
        assert!(out.contains("Client coin toss:  my number: "), "{model}: {out}");
        assert!(out.lines().any(|l| l == "Game Over!"), "{model}: {out}");
    }
    let stopped = server.stop_clean();
    assert!(
        stopped.stdout.iter().any(|l| l.starts_with("Starting game #2 with client /127.0.0.1")),
        "{:?}",
        stopped.stdout
    );
    assert!(stopped.stdout.iter().any(|l| l == "Game #1 Over!"), "{:?}", stopped.stdout);
}

mod course {
    per_model!(super::course_commands);
}

/// Refused first lines: each gets its documented error, then the close.
#[test]
fn bad_hellos_are_refused() {
    let server = Server::serve("pingpong", "thread", &[]);
    for (hello, error) in [
        ("HELLO", "ERROR expected PINGPONG 3"),
        ("PINGPONG 2", "ERROR unsupported version"),
        (&"X".repeat(100), "ERROR line too long"),
    ] {
        let mut conn = support::Lines::connect(server.addr);
        conn.send(hello);
        assert_eq!(conn.line(), error);
        conn.expect_eof(support::T);
    }
    // A line before the game number: the hello and a toss in one write.
    let mut conn = support::Lines::connect(server.addr);
    conn.send_raw(b"PINGPONG 3\nTOSS 1\n");
    let mut lines = Vec::new();
    while let Ok(Some(line)) = conn.next_line(support::T) {
        lines.push(line);
    }
    assert_eq!(lines.last().map(String::as_str), Some("ERROR unexpected line before the game number"), "{lines:?}");
    server.stop_clean();
}
