//! Arbitrary bytes, in arbitrary chunks, never panic a session and never make it say much.

use proptest::prelude::*;

use super::*;

/// Bytes that reach the parser's corners more often than uniform noise would.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"\n".to_vec()),
        Just(b"{\"cmd\":\"join\",\"channel\":\"#a\"}\n".to_vec()),
        Just(b"{\"cmd\":\"say\",\"text\":\"x\"}\n".to_vec()),
        Just(b"/join #b\n/list\n/help\n".to_vec()),
        Just(b"/nick guest1\n".to_vec()),
        Just(vec![b'x'; 100]),
    ]
}

proptest! {
    #[test]
    fn any_input_is_survived_and_bounded(chunks in proptest::collection::vec(chunk(), 1..24)) {
        let limits = Limits { max_request: 256, ..Limits::default() };
        let mut sim = Sim::with_limits(limits);
        let (a, b) = (sim.connect(), sim.connect());
        let mut lines = 0;
        for (i, data) in chunks.iter().enumerate() {
            if data.is_empty() {
                continue;
            }
            // Alternate senders so that broadcasts between them happen too.
            let id = if i % 3 == 2 { b } else { a };
            lines += data.iter().filter(|&&c| c == b'\n').count() + 1;
            sim.input(id, data);
            sim.advance(Duration::from_secs(1));
        }
        // The longest answer to one line is the help (under 1 KiB) or a list of the few
        // channels two users can make: 2 KiB a line is a generous bound.
        for id in [a, b] {
            let sent = sim.take(id).len();
            prop_assert!(sent <= 2048 * (lines + 2), "{sent} bytes for {lines} lines");
        }
        prop_assert!(sim.logs.len() <= 8 * (lines + 4));
        // A half-close lets the user go through the hub; a shutdown closes whatever is left.
        sim.read_closed(b);
        prop_assert!(sim.is_closed(b));
        sim.shutdown();
        prop_assert!(sim.is_closed(a));
    }

    #[test]
    fn typed_lines_never_panic(line in "\\PC{0,40}") {
        if let Ok(Typed::Command(command)) = parse_typed(&line) {
            let json = command.to_json();
            prop_assert_eq!(Command::from_json(&json), Ok(command));
        }
    }
}
