//! `warren bench migrate` end to end, in miniature: two nodes start, an agent with each state
//! size hops between them and ends with the right checksum (else its row says "not measured"),
//! the loops run, and the table has its shape. No figure is checked: a bench is not a test of
//! speed (docs/testing.md). Needs `wasm-opt`.

#[macro_use]
mod support;

use std::time::Duration;

use support::{Data, command, run};

#[test]
fn a_short_bench_moves_every_size_and_prints_both_tables() {
    let out = Data::new("bench-migrate");
    let args = [
        "bench",
        "migrate",
        "--sizes",
        "64k,1m",
        "--hops",
        "3",
        "--runs",
        "1",
        "--iterations",
        "100000",
        "--loop-runs",
        "1",
        "--no-pin",
        "--out",
        out.arg(),
    ];
    let (status, stdout, stderr) = run(command(&args), b"", Duration::from_secs(120));
    assert!(status.success(), "{stdout}\n{stderr}");
    let rows = |prefix: &str| stdout.lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect::<Vec<_>>();

    for (label, snapshot) in [("64 KiB", "| 64.2 KiB | 1.004 |"), ("1 MiB", "| 1024.6 KiB | 1.001 |")] {
        let [row] = rows(&format!("| {label} |")).try_into().expect("one row per size");
        assert!(row.contains(snapshot), "{row}");
        assert!(row.contains("| 3 | ") && row.contains(" ms | < 5.00 ms | "), "three hops timed: {row}");
        assert!(row.ends_with("| met |") || row.ends_with("| not met |"), "{row}");
    }
    for (prefix, goal) in
        [("| `sum` (tight: worst case) | 100000 |", "≤ 1.5×"), ("| `mix` (load, hash, store) | 100000 |", "≤ 1.2×")]
    {
        let [row] = rows(prefix).try_into().expect("one row per loop");
        assert!(row.contains(&format!("× | {goal} |")), "{row}");
    }
    assert!(!stdout.contains("not measured"), "{stdout}");

    let written = std::fs::read_to_string(out.0.join("migrate.md")).unwrap();
    assert_eq!(written, stdout);
    let svg = std::fs::read_to_string(out.0.join("migrate.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("warren bench migrate: each figure ÷ its goal"), "{svg}");
}
