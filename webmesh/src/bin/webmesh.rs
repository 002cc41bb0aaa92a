//! `webmesh`: call, emit to, and inspect webmesh servers from the shell, like
//! grpcurl for webmesh.
//!
//! ```sh
//! webmesh call ws://127.0.0.1:4269 /echo '{"blop": 56}'
//! webmesh emit ws://127.0.0.1:4269 /inc
//! webmesh call --legacy json ws://127.0.0.1:4269 /echo '"hi"'
//! webmesh subscribe ws://127.0.0.1:4269 '/news/{*rest}'
//! webmesh publish ws://127.0.0.1:4269 /news/rust '{"title": "hello"}'
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
    Call(Target),
    /// Send a JSON payload to PATH without waiting for an answer.
    Emit(Target),
    /// Subscribe to the topics PATH matches (a pattern such as `/news/{*rest}`)
    /// and print each event as one JSON line, `{"topic": .., "data": ..}`,
    /// until interrupted.
    Subscribe(Target),
    /// Publish a JSON payload to the topic PATH.
    Publish(Target),
}

#[derive(Args)]
struct Target {
    /// The server, e.g. ws://127.0.0.1:4269.
    url: String,
    /// The path of the handler, e.g. /echo.
    path: String,
    /// The payload as JSON (default: null); options for `subscribe`.
    json: Option<String>,
    /// The wire format of native webmesh.
    #[arg(long, value_enum, default_value_t = CodecArg::Msgpack)]
    codec: CodecArg,
    /// Talk to a Python webmesh 0.1.2 server using its serializer.
    #[arg(long, value_enum, conflicts_with = "codec")]
    legacy: Option<CodecArg>,
    /// Seconds to wait for the reply.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// For wss:// URLs: trust only the CA certificate(s) in this PEM file,
    /// instead of the system's roots.
    #[arg(long, value_name = "PEM")]
    ca: Option<std::path::PathBuf>,
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
    let target = match &command {
        Command::Call(t) | Command::Emit(t) | Command::Subscribe(t) | Command::Publish(t) => t,
    };
    let payload: Value = match &target.json {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("the payload is not JSON: {e}"))?,
        None => Value::Null,
    };
    let timeout = Duration::try_from_secs_f64(target.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let mut builder = Client::builder(&target.url).timeout(timeout).no_reconnect();
    if let Some(ca) = &target.ca {
        let tls = webmesh::ClientTls::default().ca_pem_file(ca).map_err(|e| e.to_string())?;
        builder = builder.tls(tls);
    }
    builder = match (target.legacy, target.codec) {
        (Some(CodecArg::Msgpack), _) => builder.legacy(LegacyFormat::MsgPack),
        (Some(CodecArg::Json), _) => builder.legacy(LegacyFormat::Json),
        (None, CodecArg::Msgpack) => builder.msgpack(),
        (None, CodecArg::Json) => builder.json(),
    };
    let client = tokio::time::timeout(timeout, builder.connect())
        .await
        .map_err(|_| format!("could not connect to {} within {timeout:?}", target.url))?
        .map_err(|e| format!("could not connect to {}: {e}", target.url))?;
    match &command {
        Command::Call(_) => {
            let reply: Value = client.call(&target.path, &payload).await.map_err(|e| e.to_string())?;
            println!("{reply}");
        }
        Command::Emit(_) => {
            client.emit(&target.path, &payload).await.map_err(|e| e.to_string())?;
            client.close().await;
        }
        Command::Publish(_) => {
            client.publish(&target.path, &payload).await.map_err(|e| e.to_string())?;
            client.close().await;
        }
        Command::Subscribe(_) => subscribe(&client, &target.path).await?,
    }
    Ok(())
}

async fn subscribe(client: &Client, pattern: &str) -> Result<(), String> {
    use std::io::Write;
    let mut events = client.subscribe::<Value>(pattern).await.map_err(|e| e.to_string())?;
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match event {
            Some(Ok(event)) => {
                let line = serde_json::json!({ "topic": event.topic, "data": event.data });
                let mut stdout = std::io::stdout().lock();
                // A closed pipe (`| head`) ends the subscription quietly.
                if writeln!(stdout, "{line}").and_then(|()| stdout.flush()).is_err() {
                    return Ok(());
                }
            }
            Some(Err(e)) => eprintln!("warning: {e}"),
            None => return Err("the connection closed".into()),
        }
    }
}
