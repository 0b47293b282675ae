use proptest::prelude::*;

use super::*;

fn samples() -> (Vec<Request>, Vec<Reply>) {
    let requests = vec![
        Request::Hello { client: u64::MAX, key: [3; 16] },
        Request::Auth { token: "t".into() },
        Request::Stat { path: "/a".into() },
        Request::List { path: String::new(), after: "b".into() },
        Request::Get { path: "/é/ü".into(), have: 7 },
        Request::Put { size: 1 << 40, path: "x".into() },
        Request::Delete { path: "/d".into() },
        Request::Cancel { id: 0xdead_beef },
    ];
    let replies = vec![
        Reply::Welcome { lease_ms: 30_000, client: 9, key: [1; 16] },
        Reply::Authorized { right: Right::Write },
        Reply::Ready { id: 77 },
        Reply::Stat(Meta { is_dir: true, size: 0, version: 3, modified_ms: 9 }),
        Reply::List { truncated: false, entries: vec![Entry { name: "a".into(), is_dir: false, size: 5 }] },
        Reply::File { version: 1, size: 2, lease_ms: 0 },
        Reply::NotModified { version: 1, lease_ms: 5 },
        Reply::Done { version: 8 },
        Reply::Deleted,
        Reply::Cancelled { id: 4, received: 1000 },
        Reply::Callback { path: "/f".into() },
        Reply::CancelResult { id: 4, outcome: Outcome::Completed },
        Reply::Error { code: ErrorCode::BadPath, message: "no".into() },
    ];
    (requests, replies)
}

#[test]
fn every_frame_round_trips_and_stops_at_its_end() {
    let (requests, replies) = samples();
    for r in requests {
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        bytes.push(0xEE);
        assert_eq!(Request::decode(&bytes), Ok(Some((r.clone(), bytes.len() - 1))));
        for cut in 0..bytes.len() - 1 {
            assert_eq!(Request::decode(&bytes[..cut]), Ok(None), "{r:?} cut at {cut}");
        }
    }
    for r in replies {
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        assert_eq!(Reply::decode(&bytes), Ok(Some((r, bytes.len()))));
    }
}

#[test]
fn malformed_frames_are_errors() {
    assert_eq!(Request::decode(&[0, 0, 0, 0]), Err(WireError::Empty));
    assert_eq!(Request::decode(&[0, 1, 0, 1]), Err(WireError::TooLarge(65_537)));
    assert_eq!(Request::decode(&[0, 0, 0, 1, 0x42]), Err(WireError::UnknownKind(0x42)));
    assert_eq!(Request::decode(&[0, 0, 0, 2, 0x01, 0]), Err(WireError::Malformed("payload too short")));
    assert_eq!(Request::decode(&[0, 0, 0, 4, 0x02, 0, 1, 0xff]), Err(WireError::Malformed("string is not UTF-8")));
    assert_eq!(Request::decode(&[0, 0, 0, 4, 0x02, 0, 0, 9]), Err(WireError::Malformed("trailing bytes")));
    assert_eq!(
        Reply::decode(&[0, 0, 0, 6, 0x83, 0, 0xff, 0xff, 0xff, 0xff]),
        Err(WireError::Malformed("more entries than bytes"))
    );
}

#[test]
fn a_listing_too_long_for_a_frame_is_cut_and_marked() {
    let entries: Vec<Entry> = (0..5000).map(|i| Entry { name: format!("{i:0>20}"), is_dir: false, size: i }).collect();
    let mut bytes = Vec::new();
    Reply::List { truncated: false, entries: entries.clone() }.encode(&mut bytes);
    let Ok(Some((Reply::List { truncated: true, entries: got }, used))) = Reply::decode(&bytes) else {
        panic!("a list")
    };
    assert_eq!(used, bytes.len());
    assert!(used <= LIST_PAGE && !got.is_empty() && entries.starts_with(&got));
}

#[test]
fn a_string_too_long_for_a_frame_is_cut_to_fit() {
    // Kind, then the string's length: 3 bytes before it.
    let fits = "a".repeat(MAX_FRAME - 3);
    let mut bytes = Vec::new();
    Request::Stat { path: fits.clone() }.encode(&mut bytes);
    assert_eq!(Request::decode(&bytes), Ok(Some((Request::Stat { path: fits }, MAX_FRAME + 4))));
    for long in ["a".repeat(MAX_FRAME), "é".repeat(MAX_FRAME)] {
        let mut bytes = Vec::new();
        Reply::Error { code: ErrorCode::Io, message: long.clone() }.encode(&mut bytes);
        let Ok(Some((Reply::Error { message, .. }, used))) = Reply::decode(&bytes) else { panic!("an error") };
        assert!(used == bytes.len() && used <= MAX_FRAME + 4 && long.starts_with(&message), "{}", message.len());
    }
}

proptest! {
    #[test]
    fn no_input_panics_or_overreads(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(Some((r, used))) = Request::decode(&bytes) {
            prop_assert!(used <= bytes.len());
            let mut again = Vec::new();
            r.encode(&mut again);
            prop_assert_eq!(&again[..], &bytes[..used]);
        }
        if let Ok(Some((_, used))) = Reply::decode(&bytes) {
            prop_assert!(used <= bytes.len());
        }
    }
}
