//! `webmesh`: call, emit to, and inspect webmesh servers from the shell, like
//! grpcurl for webmesh.
//!
//! ```sh
//! webmesh call ws://127.0.0.1:4269 /echo '{"blop": 56}'
//! webmesh emit ws://127.0.0.1:4269 /inc
//! webmesh call --legacy json ws://127.0.0.1:4269 /echo '"hi"'
//! webmesh subscribe ws://127.0.0.1:4269 '/news/{*rest}'
//! webmesh publish ws://127.0.0.1:4269 /news/rust '{"title": "hello"}'
//! WEBMESH_TOKEN=secret webmesh call ws://127.0.0.1:4269 /whoami
//! webmesh nodes ws://127.0.0.1:4269 --watch
//! ```

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::Value;
use webmesh::{Client, LegacyFormat};

#[derive(Parser)]
#[command(name = "webmesh", version, about = "Call and emit to webmesh servers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Call PATH with a JSON payload and print the reply as JSON.
    Call(Call),
    /// Send a JSON payload to PATH without waiting for an answer.
    Emit(Emit),
    /// Subscribe to the topics PATTERN matches (e.g. `/news/{*rest}`) and
    /// print each event as one JSON line, `{"topic": .., "data": ..}`, until
    /// interrupted. Follows the server across restarts: a line on stderr
    /// says when the connection drops and when it is back.
    Subscribe(Subscribe),
    /// Publish a JSON payload to the topic TOPIC.
    Publish(Publish),
    /// List the nodes of the mesh the server at URL belongs to, as that
    /// node sees them: name, id, URL, state, uptime, routes, calls/s.
    Nodes(Nodes),
}

#[derive(Args)]
struct Nodes {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    will: WillArgs,
    /// Print JSON (one array; with --watch, one node per line) for scripts.
    #[arg(long)]
    json: bool,
    /// After the table, print a line each time a node joins or changes
    /// state (with --json, each change), until interrupted. Follows the
    /// server across restarts.
    #[arg(long)]
    watch: bool,
}

/// How to reach the server.
#[derive(Args)]
struct Server {
    /// The server, e.g. ws://127.0.0.1:4269.
    url: String,
    /// The wire format of native webmesh.
    #[arg(long, value_enum, default_value_t = CodecArg::Msgpack)]
    codec: CodecArg,
    /// For wss:// URLs: trust only the CA certificate(s) in this PEM file,
    /// instead of the system's roots.
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
    /// Seconds to wait for the connection to open.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    connect_timeout: f64,
    /// A bearer token for servers that authenticate: sent as
    /// `Authorization: Bearer TOKEN` with the upgrade request. Prefer the
    /// environment variable: other users can see command lines.
    #[arg(long, env = "WEBMESH_TOKEN", hide_env_values = true, value_name = "TOKEN")]
    token: Option<String>,
    /// A header of the upgrade request, e.g. `-H 'X-Api-Key: k'`; repeatable.
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
}

fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once(':') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_owned(), value.trim().to_owned())),
        _ => Err(format!("`{text}` is not NAME:VALUE")),
    }
}

/// A message to a handler: what `call` and `emit` take.
#[derive(Args)]
struct Emit {
    #[command(flatten)]
    server: Server,
    /// The path of the handler, e.g. /echo.
    path: String,
    /// The payload as JSON (default: null).
    json: Option<String>,
    /// Talk to a Python webmesh 0.1.2 server using its serializer.
    #[arg(long, value_enum, conflicts_with = "codec")]
    legacy: Option<CodecArg>,
}

#[derive(Args)]
struct Call {
    #[command(flatten)]
    message: Emit,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
}

#[derive(Args)]
struct Subscribe {
    #[command(flatten)]
    server: Server,
    #[command(flatten)]
    will: WillArgs,
    /// The topic pattern, e.g. /news/{*rest}.
    pattern: String,
    /// Subscription options as JSON, e.g. '{"lag": "disconnect"}' (lag:
    /// drop_oldest, drop_newest or disconnect).
    options: Option<String>,
}

/// A last will, for the commands that hold a connection open.
#[derive(Args)]
struct WillArgs {
    /// Leave a last will: the server publishes JSON on TOPIC if this
    /// command's connection ends without a clean close (`kill -9`, a crash,
    /// a network failure), not when it is stopped with Ctrl-C, SIGTERM or
    /// SIGHUP.
    #[arg(long, num_args = 2, value_names = ["TOPIC", "JSON"])]
    will: Option<Vec<String>>,
    /// Seconds the server waits before publishing the will; if this command
    /// reconnects meanwhile, it is not published.
    #[arg(long, default_value_t = 0.0, value_name = "SECONDS", requires = "will")]
    will_delay: f64,
}

#[derive(Args)]
struct Publish {
    #[command(flatten)]
    server: Server,
    /// The topic, e.g. /news/rust.
    topic: String,
    /// The payload as JSON (default: null).
    json: Option<String>,
    /// Seconds to wait for the server to accept it.
    #[arg(long, default_value_t = 30.0, value_name = "SECONDS")]
    timeout: f64,
}

/// What `subscribe` accepts as options: unknown keys are refused.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeArgs {
    #[serde(default)]
    lag: webmesh::LagPolicy,
}

#[derive(Clone, Copy, ValueEnum)]
enum CodecArg {
    Msgpack,
    Json,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Call(Call { message: call, timeout }) => {
            let payload = json_arg(call.json.as_deref())?;
            let client = connect(&call.server, call.legacy, Some(timeout)).await?;
            let reply: Value = client.call(&call.path, &payload).await.map_err(describe)?;
            println!("{reply}");
        }
        Command::Emit(emit) => {
            let payload = json_arg(emit.json.as_deref())?;
            let client = connect(&emit.server, emit.legacy, None).await?;
            client.emit(&emit.path, &payload).await.map_err(describe)?;
            client.close().await;
        }
        Command::Publish(publish) => {
            let payload = json_arg(publish.json.as_deref())?;
            let client = connect(&publish.server, None, Some(publish.timeout)).await?;
            client.publish(&publish.topic, &payload).await.map_err(describe)?;
            client.close().await;
        }
        Command::Subscribe(subscribe) => {
            let options = match subscribe.options.as_deref() {
                Some(text) => serde_json::from_str::<SubscribeArgs>(text)
                    .map_err(|e| format!("invalid subscription options: {e}"))?,
                None => SubscribeArgs { lag: webmesh::LagPolicy::default() },
            };
            let client = connect_with(&subscribe.server, None, None, Reconnect::Yes, &subscribe.will).await?;
            let options = webmesh::SubscribeOptions::default().lag(options.lag);
            let followed = follow(&client, &subscribe.pattern, options).await;
            // Interrupted: a clean close, which discards the will.
            client.close().await;
            followed?;
        }
        Command::Nodes(nodes) => {
            let reconnect = if nodes.watch { Reconnect::Yes } else { Reconnect::No };
            let client = connect_with(&nodes.server, None, None, reconnect, &nodes.will).await?;
            // Subscribed first, so that no change falls between the list and the watch.
            let changes = match nodes.watch {
                true => Some(client.subscribe::<webmesh::Node>("/_mesh/nodes/*").await.map_err(describe)?),
                false => None,
            };
            let list: Vec<webmesh::Node> = client.call("/_mesh/nodes", &()).await.map_err(|e| match e {
                webmesh::Error::NotFound { .. } => "this server is no node of a mesh".to_owned(),
                e => describe(e),
            })?;
            match nodes.json {
                true => println!("{}", serde_json::to_string(&list).map_err(|e| e.to_string())?),
                false => print!("{}", table(&list)),
            }
            if let Some(changes) = changes {
                let watched = watch_nodes(&client, changes, list, nodes.json).await;
                client.close().await;
                watched?;
            } else {
                client.close().await;
            }
        }
    }
    Ok(())
}

fn json_arg(text: Option<&str>) -> Result<Value, String> {
    match text {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("the payload is not JSON: {e}")),
        None => Ok(Value::Null),
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{flag}: {e}"))
}

/// Whether a command follows the server across restarts.
#[derive(PartialEq)]
enum Reconnect {
    Yes,
    No,
}

async fn connect(server: &Server, legacy: Option<CodecArg>, timeout: Option<f64>) -> Result<Client, String> {
    connect_with(server, legacy, timeout, Reconnect::No, &WillArgs { will: None, will_delay: 0.0 }).await
}

/// Connects once; the first connection must succeed, whether or not later
/// ones are tried.
async fn connect_with(
    server: &Server,
    legacy: Option<CodecArg>,
    timeout: Option<f64>,
    reconnect: Reconnect,
    will: &WillArgs,
) -> Result<Client, String> {
    let url = redact(&server.url);
    let mut builder = Client::builder(&server.url).connect_timeout(seconds("connect-timeout", server.connect_timeout)?);
    if reconnect == Reconnect::No {
        builder = builder.no_reconnect();
    }
    if let Some(token) = &server.token {
        builder = builder.bearer_token(token);
    }
    for (name, value) in &server.headers {
        builder = builder.header(name, value);
    }
    if let Some(timeout) = timeout {
        builder = builder.timeout(seconds("timeout", timeout)?);
    }
    if let Some(ca) = &server.ca {
        let tls = webmesh::ClientTls::default().ca_pem_file(ca).map_err(|e| e.to_string())?;
        builder = builder.tls(tls);
    }
    builder = match (legacy, server.codec) {
        (Some(CodecArg::Msgpack), _) => builder.legacy(LegacyFormat::MsgPack),
        (Some(CodecArg::Json), _) => builder.legacy(LegacyFormat::Json),
        (None, CodecArg::Msgpack) => builder.msgpack(),
        (None, CodecArg::Json) => builder.json(),
    };
    if let Some([topic, json]) = will.will.as_deref() {
        let data = json_arg(Some(json)).map_err(|e| format!("--will: {e}"))?;
        builder = builder.will(topic, &data).will_delay(seconds("will-delay", will.will_delay)?);
    }
    builder.connect().await.map_err(|e| format!("could not connect to {url}: {}", describe(e)))
}

/// An error as one line, with a handler error's data.
fn describe(error: webmesh::Error) -> String {
    match &error {
        webmesh::Error::Handler(e) => match e.data() {
            Some(data) => format!("{error} (data: {data})"),
            None => error.to_string(),
        },
        _ => error.to_string(),
    }
}

/// The URL with its query's values hidden: they may be credentials.
fn redact(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else { return url.to_owned() };
    let hidden: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None => pair.to_owned(),
        })
        .collect();
    format!("{base}?{}", hidden.join("&"))
}

async fn follow(client: &Client, pattern: &str, options: webmesh::SubscribeOptions) -> Result<(), String> {
    let events = client.subscribe_with::<Value>(pattern, options).await.map_err(describe)?;
    print_events(client, events, |event| {
        Ok(Some(serde_json::json!({ "topic": event.topic, "data": event.data }).to_string()))
    })
    .await
}

/// Prints the line `line` makes of each event of `events` (if any), until
/// interrupted, saying on stderr when the connection drops and when it is
/// back. A closed pipe (`| head`) ends it quietly.
async fn print_events<T: serde::de::DeserializeOwned>(
    client: &Client,
    mut events: webmesh::Subscription<T>,
    mut line: impl FnMut(webmesh::Event<T>) -> Result<Option<String>, String>,
) -> Result<(), String> {
    use std::io::Write;
    let mut states = client.state_changes();
    let mut lost = false;
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            changed = states.changed(), if changed_is_possible(&states) => {
                if changed.is_ok() {
                    report(&states.borrow_and_update(), &mut lost);
                }
                continue;
            }
            () = stopped() => return Ok(()),
        };
        let event = match event {
            Some(Ok(event)) => event,
            // The gap of a reconnection, said by `report` already.
            Some(Err(webmesh::Error::Lagged { missed: None })) => continue,
            Some(Err(e)) => {
                eprintln!("warning: {e}");
                continue;
            }
            None => return Err("the connection closed".into()),
        };
        let Some(text) = line(event)? else { continue };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{text}").and_then(|()| stdout.flush()).is_err() {
            return Ok(());
        }
    }
}

/// Resolves when the command is asked to stop: Ctrl-C (SIGINT), and on
/// Unix SIGTERM (`kill`, `systemctl stop`, `docker stop`) and SIGHUP (the
/// terminal closed). The command then closes its connection cleanly: a will
/// is for a death, not for these.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut hangup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = hangup.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// The nodes as a table.
fn table(nodes: &[webmesh::Node]) -> String {
    let mut rows = vec![["NAME", "ID", "URL", "STATE", "UPTIME", "CALLS/S", "ROUTES"].map(String::from).to_vec()];
    for node in nodes {
        let (uptime, rate) = match &node.status {
            Some(status) => (human(Duration::from_millis(status.uptime_ms)), format!("{:.1}", status.calls_per_second)),
            None => ("-".into(), "-".into()),
        };
        rows.push(vec![
            node.name.clone(),
            node.id.clone(),
            node.url.clone(),
            node.state.to_string(),
            uptime,
            rate,
            node.routes.calls.join(" "),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// A duration as people read it: `42s`, `3m07s`, `5h02m`, `2d03h`.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// Prints each node that joins or changes state (with `json`, each change).
async fn watch_nodes(
    client: &Client,
    changes: webmesh::Subscription<webmesh::Node>,
    list: Vec<webmesh::Node>,
    json: bool,
) -> Result<(), String> {
    let mut states: std::collections::HashMap<String, webmesh::NodeState> =
        list.into_iter().map(|n| (n.id, n.state)).collect();
    print_events(client, changes, |event| {
        let node = event.data;
        if json {
            return serde_json::to_string(&node).map(Some).map_err(|e| e.to_string());
        }
        if states.insert(node.id.clone(), node.state) == Some(node.state) {
            return Ok(None);
        }
        Ok(Some(format!("{}  {}  {}  {}  {}", utc_time(), node.name, node.id, node.url, node.state)))
    })
    .await
}

/// The time of day in UTC, `HH:MM:SS`.
fn utc_time() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    format!("{:02}:{:02}:{:02}", secs / 3600 % 24, secs / 60 % 60, secs % 60)
}

fn changed_is_possible(states: &tokio::sync::watch::Receiver<webmesh::ConnectionState>) -> bool {
    states.has_changed().is_ok()
}

/// Says on stderr when the connection drops and when it is back, once each.
fn report(state: &webmesh::ConnectionState, lost: &mut bool) {
    use webmesh::ConnectionState;
    match state {
        ConnectionState::Reconnecting { last_error, .. } if !*lost => {
            *lost = true;
            let why = last_error.as_deref().unwrap_or("the connection closed");
            eprintln!("webmesh: connection lost ({why}); reconnecting");
        }
        ConnectionState::Connected if *lost => {
            *lost = false;
            eprintln!("webmesh: reconnected and resubscribed; events published meanwhile are missed");
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn each_subcommand_has_its_own_help() {
        let mut cli = Cli::command();
        let subscribe = cli.find_subcommand_mut("subscribe").unwrap().render_long_help().to_string();
        assert!(subscribe.contains("PATTERN") && !subscribe.contains("--timeout"), "{subscribe}");
        let call = cli.find_subcommand_mut("call").unwrap().render_long_help().to_string();
        assert!(call.contains("--timeout") && call.contains("--legacy"), "{call}");
    }

    #[test]
    fn subscription_options_are_checked() {
        assert!(serde_json::from_str::<SubscribeArgs>(r#"{"lag": "disconnect"}"#).is_ok());
        assert!(serde_json::from_str::<SubscribeArgs>(r#"{"lag": "bogus"}"#).is_err());
        assert!(serde_json::from_str::<SubscribeArgs>(r#"{"lagg": "drop_newest"}"#).is_err());
    }

    #[test]
    fn headers_are_name_colon_value() {
        assert_eq!(parse_header("X-Api-Key: k:1").unwrap(), ("X-Api-Key".into(), "k:1".into()));
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(": v").is_err());
    }

    #[test]
    fn query_values_are_redacted() {
        assert_eq!(redact("ws://h:1/?token=secret&x=1"), "ws://h:1/?token=***&x=***");
        assert_eq!(redact("ws://h:1/"), "ws://h:1/");
    }
}
