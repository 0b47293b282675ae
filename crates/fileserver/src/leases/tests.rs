//! The lease table alone, on a virtual clock.

use super::*;
use crate::journal::MemJournal;
use crate::session::tests::settle;

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
    settle(&mut hub, t0, &mut out);
    hub.handle_request(t0, a, FileRequest::Grant { client: 1, path: "/f".into() }, &mut out);
    settle(&mut hub, t0, &mut out);
    assert_eq!(out.drain_messages().next_back(), Some((a, FileMessage::Granted { lease_ms: 10_000 })));
    assert!(journal.records().contains(&Record::Grant { client: 1, path: "/f".into(), until_ms: BASE + 10_000 }));
    // Renewed at 8 s: still leased at 15 s, so a change then calls the holder back.
    hub.handle_request(t0 + Duration::from_secs(8), a, FileRequest::Grant { client: 1, path: "/f".into() }, &mut out);
    settle(&mut hub, t0, &mut out);
    out.drain_messages();
    hub.handle_request(t0 + Duration::from_secs(15), b, FileRequest::Changed { path: "/f".into() }, &mut out);
    settle(&mut hub, t0, &mut out);
    assert_eq!(
        out.drain_messages().collect::<Vec<_>>(),
        [(a, FileMessage::Callback { path: "/f".into() }), (b, FileMessage::Noted)]
    );
    // A lease that ran out is nobody's business any more.
    hub.handle_request(t0 + Duration::from_secs(16), a, FileRequest::Grant { client: 1, path: "/g".into() }, &mut out);
    settle(&mut hub, t0, &mut out);
    out.drain_messages();
    hub.handle_request(t0 + Duration::from_secs(27), b, FileRequest::Changed { path: "/g".into() }, &mut out);
    settle(&mut hub, t0, &mut out);
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
        settle(&mut h, t0, &mut out);
    }
    h.handle_request(t0, SessionId(1), FileRequest::Grant { client: 1, path: "/f0".into() }, &mut out);
    settle(&mut h, t0, &mut out);
    drop(h);
    let restarted = hub(&journal, t0);
    assert_eq!(restarted.counts(), (3, 0));
    assert_eq!(journal.records().len(), 3, "one record per live lease after the snapshot");
    // The restart comes 11 s of wall time later: every lease has run out.
    let later =
        LeaseHub::new(Box::new(journal.clone()), journal.records(), Duration::from_secs(10), (t0, BASE + 11_000));
    assert_eq!(later.counts(), (0, 0));
}

/// Appends run one at a time; what is asked meanwhile goes in the next append together, and
/// each answer waits for its own records to be durable.
#[test]
fn appends_are_group_committed_and_answers_wait_for_them() {
    let (t0, journal) = (Instant::now(), MemJournal::default());
    let mut hub = hub(&journal, t0);
    let mut out = HubOutput::new();
    let grant = |client: u64| FileRequest::Grant { client, path: "/f".into() };
    hub.handle_request(t0, SessionId(1), grant(1), &mut out);
    let first: Vec<_> = out.drain_jobs().collect();
    assert_eq!(first.len(), 1, "the first grant is appended at once");
    assert_eq!(out.drain_messages().count(), 0, "not promised before it is durable");
    hub.handle_request(t0, SessionId(2), grant(2), &mut out);
    hub.handle_request(t0, SessionId(3), grant(3), &mut out);
    assert_eq!(out.drain_jobs().count(), 0, "one append at a time");
    assert_eq!(journal.records().len(), 0);
    for (token, job) in first {
        hub.handle_completion(t0, token, crate::session::tests::run(job), &mut out);
    }
    assert_eq!(out.drain_messages().collect::<Vec<_>>(), [(SessionId(1), FileMessage::Granted { lease_ms: 10_000 })]);
    assert_eq!(journal.records().len(), 1);
    let second: Vec<_> = out.drain_jobs().collect();
    assert_eq!(second.len(), 1, "the two grants that waited go in one append");
    for (token, job) in second {
        hub.handle_completion(t0, token, crate::session::tests::run(job), &mut out);
    }
    assert_eq!(journal.records().len(), 3);
    let answered: Vec<_> = out.drain_messages().map(|(to, _)| to).collect();
    assert_eq!(answered, [SessionId(2), SessionId(3)]);
    assert_eq!(out.drain_jobs().count(), 0);
}

/// An append that fails promises no lease.
#[test]
fn a_failed_append_promises_nothing() {
    struct Broken;
    impl Journal for Broken {
        fn append(&mut self, _: &[Record]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk gone"))
        }
        fn rewrite(&mut self, _: &[Record]) -> std::io::Result<()> {
            Err(std::io::Error::other("disk gone"))
        }
    }
    let t0 = Instant::now();
    let mut hub = LeaseHub::new(Box::new(Broken), Vec::new(), Duration::from_secs(10), (t0, BASE));
    let mut out = HubOutput::new();
    hub.handle_request(t0, SessionId(1), FileRequest::Grant { client: 1, path: "/f".into() }, &mut out);
    settle(&mut hub, t0, &mut out);
    assert_eq!(out.drain_messages().collect::<Vec<_>>(), [(SessionId(1), FileMessage::Granted { lease_ms: 0 })]);
}
