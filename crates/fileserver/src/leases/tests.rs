//! The lease table alone, on a virtual clock.

use super::*;
use crate::journal::MemJournal;

const BASE: u64 = 1_000_000;

fn hub(journal: &MemJournal, t0: Instant) -> LeaseHub {
    LeaseHub::new(Box::new(journal.clone()), journal.records(), Duration::from_secs(10), (t0, BASE))
}

#[test]
fn leases_expire_on_the_virtual_clock_and_a_renewal_extends_them() {
    let (t0, journal) = (Instant::now(), MemJournal::default());
    let mut hub = hub(&journal, t0);
    let mut out = HubOutput::new();
    let (a, b) = (SessionId(1), SessionId(2));
    hub.handle_request(t0, a, FileRequest::Hello { client: 1 }, &mut out);
    hub.handle_request(t0, a, FileRequest::Grant { client: 1, path: "/f".into() }, &mut out);
    assert_eq!(out.drain_messages().next_back(), Some((a, FileMessage::Granted { lease_ms: 10_000 })));
    assert!(journal.records().contains(&Record::Grant { client: 1, path: "/f".into(), until_ms: BASE + 10_000 }));
    // Renewed at 8 s: still leased at 15 s, so a change then calls the holder back.
    hub.handle_request(t0 + Duration::from_secs(8), a, FileRequest::Grant { client: 1, path: "/f".into() }, &mut out);
    out.drain_messages();
    hub.handle_request(t0 + Duration::from_secs(15), b, FileRequest::Changed { path: "/f".into() }, &mut out);
    assert_eq!(
        out.drain_messages().collect::<Vec<_>>(),
        [(a, FileMessage::Callback { path: "/f".into() }), (b, FileMessage::Noted)]
    );
    // A lease that ran out is nobody's business any more.
    hub.handle_request(t0 + Duration::from_secs(16), a, FileRequest::Grant { client: 1, path: "/g".into() }, &mut out);
    out.drain_messages();
    hub.handle_request(t0 + Duration::from_secs(27), b, FileRequest::Changed { path: "/g".into() }, &mut out);
    assert_eq!(out.drain_messages().collect::<Vec<_>>(), [(b, FileMessage::Noted)]);
    assert_eq!(hub.counts(), (0, 0));
}

#[test]
fn a_restart_drops_leases_that_ran_out_meanwhile_and_compacts_the_journal() {
    let (t0, journal) = (Instant::now(), MemJournal::default());
    let mut h = hub(&journal, t0);
    let mut out = HubOutput::new();
    for i in 0..3 {
        h.handle_request(t0, SessionId(1), FileRequest::Grant { client: 1, path: format!("/f{i}") }, &mut out);
    }
    h.handle_request(t0, SessionId(1), FileRequest::Grant { client: 1, path: "/f0".into() }, &mut out);
    drop(h);
    let restarted = hub(&journal, t0);
    assert_eq!(restarted.counts(), (3, 0));
    assert_eq!(journal.records().len(), 3, "one record per live lease after the snapshot");
    // The restart comes 11 s of wall time later: every lease has run out.
    let later =
        LeaseHub::new(Box::new(journal.clone()), journal.records(), Duration::from_secs(10), (t0, BASE + 11_000));
    assert_eq!(later.counts(), (0, 0));
}
