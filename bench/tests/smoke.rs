//! The harness still runs end to end and prints every table, with tiny
//! loads. It checks no speed: timings belong to the benchmark, not tests.

#[test]
fn the_harness_prints_every_table() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_webmesh-bench"))
        .args(["--runs", "1", "--seconds", "0.2", "--connections", "2", "--in-flight", "2"])
        .args(["--idle", "20", "--subscribers", "5", "--events", "5"])
        .output()
        .expect("run the harness");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for system in ["axum-echo", "jsonrpsee", "socketioxide", "webmesh-msgpack", "webmesh-json", "webmesh-16k-zlib"] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {system} |")))
            .unwrap_or_else(|| panic!("{system}: {stdout}"));
        let calls: f64 = row.split('|').nth(2).unwrap().trim().parse().unwrap();
        assert!(calls > 0.0, "{system} answered no call: {row}");
    }
    assert!(stdout.contains("RSS per idle connection"), "{stdout}");
    assert!(stdout.contains("deliveries/s"), "{stdout}");
    assert_eq!(stdout.matches("(limit").count(), 5, "{stdout}");
}
