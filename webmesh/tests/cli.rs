//! The `webmesh` command-line client against a real server.

use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use webmesh::{CallError, Router, Server};

async fn start() -> String {
    let router = Router::new()
        .on("/", |data: Value| async move { data })
        .on("/echo", |data: Value| async move { data })
        .on("/fail", || async { Err::<(), _>(CallError::new("nope", "always fails")) })
        .on("/fail-with-data", || async {
            Err::<(), _>(CallError::new("nope", "always fails").with_data(serde_json::json!({"retry_in": 5})))
        })
        .on("/slow", || async { tokio::time::sleep(Duration::from_secs(30)).await });
    let server = Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0").bind().await.unwrap();
    let url = format!("ws://{}", server.local_addr());
    tokio::spawn(server.serve());
    url
}

async fn cli(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || std::process::Command::new(env!("CARGO_BIN_EXE_webmesh")).args(args).output())
        .await
        .unwrap()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn call_prints_the_reply_as_json_in_every_codec() {
    let url = start().await;
    for codec in ["msgpack", "json"] {
        let out = cli(&["call", "--codec", codec, &url, "/echo", r#"{"blop": 56}"#]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(stdout(&out), "{\"blop\":56}\n");
        let out = cli(&["call", "--legacy", codec, &url, "/", "[1,2]"]).await;
        assert_eq!(stdout(&out), "[1,2]\n", "{}", stderr(&out));
    }
    // No payload is null.
    assert_eq!(stdout(&cli(&["call", &url, "/echo"]).await), "null\n");
}

#[tokio::test]
async fn emit_prints_nothing_and_succeeds() {
    let url = start().await;
    let out = cli(&["emit", &url, "/echo", "1"]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn errors_go_to_stderr_with_exit_code_1() {
    let url = start().await;
    let out = cli(&["call", &url, "/missing"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: no handler for `/missing`\n");
    assert!(out.stdout.is_empty());

    let out = cli(&["call", &url, "/fail"]).await;
    assert_eq!((out.status.code(), stderr(&out).as_str()), (Some(1), "error: handler error nope: always fails\n"));

    let out = cli(&["call", &url, "/echo", "{not json"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: the payload is not JSON"), "{}", stderr(&out));

    let out = cli(&["call", "--timeout", "0.2", &url, "/slow"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: no reply within"), "{}", stderr(&out));

    let out = cli(&["call", "--codec", "yaml", &url, "/echo"]).await;
    assert_eq!(out.status.code(), Some(2), "usage errors exit with 2");
}

#[tokio::test]
async fn nothing_listening_is_a_clean_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = cli(&["call", "--timeout", "5", &format!("ws://127.0.0.1:{port}"), "/echo"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with("error: could not connect"), "{}", stderr(&out));
}

#[tokio::test]
async fn errors_carry_their_data_and_hide_credentials() {
    let url = start().await;
    let out = cli(&["call", &url, "/fail-with-data"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(r#"(data: {"retry_in":5})"#), "{}", stderr(&out));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = cli(&["call", &format!("ws://127.0.0.1:{port}?token=hunter2"), "/echo"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("hunter2") && stderr(&out).contains("token=***"), "{}", stderr(&out));
    let out = cli(&["subscribe", &url, "/news", r#"{"lag": "bogus"}"#]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid subscription options"), "{}", stderr(&out));
    let out = cli(&["subscribe", "--timeout", "3", &url, "/news"]).await;
    assert_ne!(out.status.code(), Some(0), "subscribe has no --timeout");
}

/// Starts the echo example of the root package on a free port, and waits
/// until it listens.
async fn start_echo() -> (tokio::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    start_echo_on(port).await
}

async fn start_echo_on(port: u16) -> (tokio::process::Child, String) {
    // `cargo test --workspace` builds the examples of the root package here.
    let deps = std::env::current_exe().unwrap();
    let example = deps.parent().and_then(|d| d.parent()).unwrap().join("examples/echo");
    assert!(example.exists(), "{} is missing: run `cargo test --workspace --all-features`", example.display());
    let echo = tokio::process::Command::new(example)
        .env("WEBMESH_ADDR", format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (echo, format!("ws://127.0.0.1:{port}"))
}

/// The README's promise: `cargo run --example echo` serves, the CLI calls it.
#[tokio::test]
async fn the_cli_calls_the_echo_example() {
    let (mut echo, url) = start_echo().await;
    let out = cli(&["call", &url, "/echo", r#"{"blop": 56}"#]).await;
    assert_eq!(stdout(&out), "{\"blop\":56}\n", "{}", stderr(&out));
    assert_eq!(stdout(&cli(&["call", "--codec", "json", &url, "/", "[true]"]).await), "[true]\n");
    echo.kill().await.unwrap();
}

/// Subscribing from one terminal and publishing from another, against the echo example.
#[tokio::test]
async fn the_cli_subscribes_and_publishes_on_the_echo_example() {
    let (_echo, url) = start_echo().await;
    let (_subscriber, mut lines) = running(&["subscribe", &url, "/news/{*rest}"]);
    // Publish until the subscriber, which starts concurrently, prints.
    let mut line = None;
    for n in 0..400 {
        let out = cli(&["publish", &url, "/news/rust", &format!(r#"{{"n": {n}}}"#)]).await;
        assert!(out.status.success(), "{}", stderr(&out));
        if let Ok(next) = tokio::time::timeout(Duration::from_millis(50), lines.next_line()).await {
            line = next.unwrap();
            break;
        }
    }
    let event: Value = serde_json::from_str(&line.expect("an event line")).unwrap();
    assert_eq!(event["topic"], "/news/rust");
    assert!(event["data"]["n"].is_u64(), "{event}");

    // Publishing elsewhere is refused by the echo example.
    let out = cli(&["publish", &url, "/elsewhere", "1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: handler error forbidden: clients may not publish to `/elsewhere`\n");
}

/// The README's two-terminal demo of a last will, on the echo example: a
/// supervisor subscribed to `/workers/*/gone` sees the will of a `subscribe
/// --will` killed with `kill -9`, and none of one ended with Ctrl-C.
#[tokio::test]
async fn a_subscriber_with_a_will_killed_with_sigkill_has_its_will_printed_by_another() {
    let (_echo, url) = start_echo().await;
    let (_supervisor, mut lines) = running(&["subscribe", &url, "/workers/*/gone"]);
    // The supervisor is subscribed once it prints what is published.
    assert_eq!(publish_until_printed(&url, "/workers/probe/gone", &mut lines).await["topic"], "/workers/probe/gone");

    let worker = |n: &str| {
        let (topic, will, job) =
            (format!("/workers/{n}/gone"), format!(r#"{{"worker": {n}}}"#), format!("/news/jobs/{n}"));
        running(&["subscribe", "--will", &topic, &will, &url, &job])
    };
    // Ctrl-C is a clean close: no will. Then kill -9: the will.
    for (n, signal) in [("5", "-TERM"), ("6", "-INT"), ("7", "-KILL")] {
        let (mut child, mut printed) = worker(n);
        // Its will is in force (sent before its subscription) once what is
        // published to its job reaches it.
        publish_until_printed(&url, &format!("/news/jobs/{n}"), &mut printed).await;
        let pid = child.id().unwrap().to_string();
        let status = std::process::Command::new("kill").args([signal, &pid]).status().unwrap();
        assert!(status.success());
        let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
        if signal == "-INT" {
            assert!(status.success(), "Ctrl-C ends subscribe cleanly");
        }
    }
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event, serde_json::json!({"topic": "/workers/7/gone", "data": {"worker": 7}}), "7's will, not 6's");

    // A will the server does not allow fails the command at once, with the reason.
    let out = cli(&["subscribe", "--will", "/elsewhere", "1", &url, "/news/jobs/8"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("clients may not publish to `/elsewhere`"), "{}", stderr(&out));
}

type StdoutLines = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// The CLI running with `args`, killed when dropped, and the lines it prints.
fn running(args: &[&str]) -> (tokio::process::Child, StdoutLines) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_webmesh"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

/// Publishes to `topic` until `lines` yields an event line.
async fn publish_until_printed(
    url: &str,
    topic: &str,
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    for n in 0..400 {
        let _ = cli(&["publish", url, topic, &format!(r#"{{"n": {n}}}"#)]).await;
        if let Ok(line) = tokio::time::timeout(Duration::from_millis(50), lines.next_line()).await {
            return serde_json::from_str(&line.unwrap().expect("an event line")).unwrap();
        }
    }
    panic!("the subscriber printed nothing");
}

/// As `nats sub` does: `webmesh subscribe` follows the echo example through
/// a kill -9 and a restart, saying so on stderr.
#[tokio::test]
async fn subscribe_follows_the_server_across_a_restart() {
    use tokio::io::AsyncBufReadExt;
    let (mut echo, url) = start_echo().await;
    let mut subscriber = tokio::process::Command::new(env!("CARGO_BIN_EXE_webmesh"))
        .args(["subscribe", &url, "/news/{*rest}"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(subscriber.stdout.take().unwrap()).lines();
    let mut errors = tokio::io::BufReader::new(subscriber.stderr.take().unwrap()).lines();
    assert_eq!(publish_until_printed(&url, "/news/before", &mut lines).await["topic"], "/news/before");

    echo.kill().await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(10), errors.next_line()).await.unwrap().unwrap().unwrap();
    assert!(lost.starts_with("webmesh: connection lost ("), "{lost}");
    assert!(lost.ends_with("); reconnecting"), "{lost}");

    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let (_echo, _) = start_echo_on(port).await;
    let event = publish_until_printed(&url, "/news/after", &mut lines).await;
    assert_eq!(event["topic"], "/news/after");
    let back = tokio::time::timeout(Duration::from_secs(10), errors.next_line()).await.unwrap().unwrap().unwrap();
    assert_eq!(back, "webmesh: reconnected and resubscribed; events published meanwhile are missed");
    assert!(subscriber.try_wait().unwrap().is_none(), "the subscriber still runs");
}

/// `--token`, `WEBMESH_TOKEN` and `-H` reach a server that authenticates.
#[tokio::test]
async fn the_cli_authenticates_with_a_token_or_headers() {
    use webmesh::{AuthError, Handshake};
    let server = Server::builder()
        .registered_handlers(false)
        .router(Router::new().on("/echo", |data: Value| async move { data }))
        .authenticate(|handshake: Handshake| async move {
            match (handshake.bearer_token(), handshake.header("x-api-key")) {
                (Some("s3cret"), _) | (_, Some("k1")) => Ok(()),
                _ => Err(AuthError::unauthorized("send a token")),
            }
        })
        .addr("127.0.0.1:0")
        .bind()
        .await
        .unwrap();
    let url = format!("ws://{}", server.local_addr());
    tokio::spawn(server.serve());

    let out = cli(&["call", &url, "/echo", "1"]).await;
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
    for args in [&["--token", "s3cret"][..], &["-H", "X-Api-Key: k1"], &["--header", "x-api-key:k1"]] {
        let out = cli(&[&["call", &url, "/echo", "1"][..], args].concat()).await;
        assert_eq!(stdout(&out), "1\n", "{args:?}: {}", stderr(&out));
    }
    let url_for_env = url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_webmesh"))
            .args(["call", &url_for_env, "/echo", "2"])
            .env("WEBMESH_TOKEN", "s3cret")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(stdout(&out), "2\n", "{}", stderr(&out));
    // A wrong token is refused, and its value is not printed.
    let out = cli(&["call", "--token", "wrong-token", &url, "/echo", "1"]).await;
    assert!(!out.status.success() && !stderr(&out).contains("wrong-token"), "{}", stderr(&out));
}

#[tokio::test]
async fn the_cli_calls_a_wss_server_trusting_a_given_ca() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    let tls = webmesh::TlsConfig::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
    let router = Router::new().on("/echo", |data: Value| async move { data });
    let server =
        Server::builder().registered_handlers(false).router(router).tls(tls).addr("127.0.0.1:0").bind().await.unwrap();
    let url = format!("wss://{}", server.local_addr());
    tokio::spawn(server.serve());
    let ca_file = std::env::temp_dir().join(format!("webmesh-cli-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca.pem()).unwrap();

    let out = cli(&["call", "--ca", ca_file.to_str().unwrap(), &url, "/echo", "[1]"]).await;
    assert_eq!(stdout(&out), "[1]\n", "{}", stderr(&out));
    // Without the CA, the certificate is not trusted.
    let out = cli(&["call", "--timeout", "5", &url, "/echo", "[1]"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_a_mesh_as_a_table_and_as_json_and_watches_it() {
    use webmesh::{Mesh, NodeState};
    let node = |name: &str, path: &'static str| {
        let server =
            Server::builder().registered_handlers(false).router(Router::new().on(path, || "ok")).addr("127.0.0.1:0");
        Mesh::builder().server(server).name(name).status_interval(Duration::from_millis(100))
    };
    let a = node("alpha", "/a").start().await.unwrap();
    let b = node("beta", "/b").peer(a.url()).start().await.unwrap();
    let c = node("gamma", "/c").peer(a.url()).start().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ![&a, &b, &c].iter().all(|n| n.nodes().len() == 3 && n.nodes().iter().all(|n| n.state == NodeState::Up)) {
        assert!(std::time::Instant::now() < deadline, "the mesh did not form");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let out = cli(&["nodes", &a.url()]).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("STATE") && lines[0].contains("CALLS/S"), "{table}");
    for (line, (node, route)) in lines[1..].iter().zip([(&a, "/a"), (&b, "/b"), (&c, "/c")]) {
        for cell in [node.name(), node.id(), node.url(), "up".into(), route.to_owned()] {
            assert!(line.contains(&cell), "{cell} in {line}");
        }
    }

    let out = cli(&["nodes", "--json", &b.url()]).await;
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let mut ids: Vec<&str> = listed.iter().map(|n| n["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    let mut expected = vec![a.id(), b.id(), c.id()];
    expected.sort();
    assert_eq!(ids, expected);
    assert!(listed.iter().all(|n| n["state"] == "up" && n["status"]["uptime_ms"].is_u64()), "{listed:?}");

    // --watch: the table, then a line when c leaves.
    let (_watcher, mut lines) = running(&["nodes", "--watch", &a.url()]);
    for _ in 0..4 {
        tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
    }
    // Status reports (every 100 ms) print nothing: only changes of state.
    assert!(tokio::time::timeout(Duration::from_millis(500), lines.next_line()).await.is_err());
    c.shutdown().await;
    let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.contains(&c.id()) && line.ends_with("left"), "{line}");

    // A server that is no node says so.
    let out = cli(&["nodes", &start().await]).await;
    assert_eq!(stderr(&out), "error: this server is no node of a mesh\n");
    a.shutdown().await;
    b.shutdown().await;
}
