//! The harness still runs end to end and prints every table, with tiny
//! loads. It checks no speed: timings belong to the benchmark, not tests.

#[test]
fn the_harness_prints_every_table() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webmesh-bench"))
        .args(["--runs", "1", "--seconds", "0.2", "--connections", "2", "--in-flight", "2"])
        .args(["--idle", "20", "--subscribers", "5", "--events", "5"])
        .args(["--scaling", "0,100", "--publishes", "20"])
        .output()
        .expect("run the harness");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let calls = table(&stdout, "Calls:");
    for system in ["axum-echo", "jsonrpsee", "socketioxide", "webmesh-msgpack", "webmesh-json", "webmesh-16k-zlib"] {
        assert!(column(&calls, system, 1) > 0.0, "{system} answered no call: {stdout}");
    }
    assert!(stdout.contains("RSS per idle connection"), "{stdout}");
    let fanout = table(&stdout, "Fan-out:");
    for system in ["socketioxide", "webmesh-msgpack", "webmesh-guarded", "nats-server"] {
        assert!(column(&fanout, system, 1) > 0.0, "{system} delivered nothing: {stdout}");
    }
    let scaling = table(&stdout, "Publish cost with N unrelated wildcard subscriptions");
    for unrelated in ["0", "100"] {
        assert!(column(&scaling, unrelated, 1) > 0.0, "no publish cost beside {unrelated}: {stdout}");
    }
    // The five of calls and idle memory, webmesh's CPU per delivery against
    // nats-server and socketioxide; none for publish cost, whose target is
    // at 100,000 subscriptions.
    assert_eq!(stdout.matches("(limit").count(), 7, "{stdout}");
}

/// The rows of the table under the heading that starts with `heading`.
fn table<'a>(stdout: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(heading));
    assert!(lines.next().is_some(), "no table {heading:?}: {stdout}");
    // A blank line, the header, the separator, then the rows.
    lines.skip(3).take_while(|l| l.starts_with('|')).collect()
}

/// Column `index` (after the first) of the row whose first column is
/// `first`, as a number.
fn column(rows: &[&str], first: &str, index: usize) -> f64 {
    let row = rows.iter().find(|r| r.starts_with(&format!("| {first} |"))).unwrap_or_else(|| panic!("no row {first}"));
    let cell = row.split('|').nth(index + 1).unwrap().trim();
    cell.parse().unwrap_or_else(|_| panic!("not a number in {row}"))
}
