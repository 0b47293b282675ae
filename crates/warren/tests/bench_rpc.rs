//! `warren bench rpc` end to end, in miniature: its servers start (tonic's hello-world, the
//! stalling replicas, `warren objects serve`), every row is measured without errors, and a
//! replica killed under load costs the failover client no call. No figure is checked: a bench is
//! not a test of speed (docs/testing.md).

#[macro_use]
mod support;

use std::time::Duration;

use support::{Data, command, run};

#[test]
fn a_short_bench_measures_every_row_and_failover_loses_no_call() {
    let out = Data::new("bench-rpc");
    let args = [
        "bench",
        "rpc",
        "--models",
        "event",
        "--in-flight",
        "2",
        "--callers",
        "2",
        "--duration",
        "300ms",
        "--runs",
        "1",
        "--no-pin",
        "--out",
        out.arg(),
    ];
    let (status, stdout, stderr) = run(command(&args), b"", Duration::from_secs(120));
    assert!(status.success(), "{stdout}\n{stderr}");
    let rows = |prefix: &str| stdout.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect::<Vec<_>>();

    let unary = rows("| 2 |");
    assert_eq!(unary.len(), 5, "{stdout}");
    let names = [
        "tonic, gRPC",
        "warren event, binary, inline",
        "warren event, binary, inline, busy-poll client",
        "warren event, binary, per-object",
        "warren event, JSON/HTTP, inline",
    ];
    for (row, name) in unary.iter().zip(names) {
        assert!(row.starts_with(&format!("| 2 | {name} | ")), "{row}");
        assert!(row.ends_with(" | 0 |"), "errors: {row}");
    }

    let hedging = rows("| three healthy").into_iter().chain(rows("| round robin, no hedging")).chain(rows("| hedging"));
    let hedging: Vec<String> = hedging.collect();
    assert_eq!(hedging.len(), 4, "{stdout}");
    assert!(hedging.iter().all(|r| r.ends_with(" | 0 |")), "{hedging:?}");
    assert!(hedging[0].contains("| 0.00 % (0 + 0) |") && hedging[1].contains("| 0.00 % (0 + 0) |"));
    assert!(
        hedging[2].starts_with(
            "| hedging at the p99 of answers, learnt (the default; 10ms until 100 answers; learnt per run: "
        ),
        "{}",
        hedging[2]
    );

    // Without failover, calls sent to the dead replica fail; with it, none does.
    let [without] = rows("| round robin, no failover").try_into().expect("one row");
    assert!(!without.ends_with(" | 0 |") && without.contains("unavailable"), "{without}");
    let [with] = rows("| failover + outlier ejection").try_into().expect("one row");
    assert!(with.ends_with(" | 0 |"), "{with}");
    assert!(stdout.contains("0 errors (goal 0: met)"), "{stdout}");

    let written = std::fs::read_to_string(out.0.join("rpc.md")).unwrap();
    assert_eq!(written, stdout);
}
