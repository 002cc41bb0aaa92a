//! `webmesh`: call, emit to, and inspect webmesh servers from the shell, like
//! grpcurl for webmesh.
//!
//! ```sh
//! webmesh call ws://127.0.0.1:4269 /echo '{"blop": 56}'
//! webmesh emit ws://127.0.0.1:4269 /inc
//! webmesh call --legacy json ws://127.0.0.1:4269 /echo '"hi"'
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
}

#[derive(Args)]
struct Target {
    /// The server, e.g. ws://127.0.0.1:4269.
    url: String,
    /// The path of the handler, e.g. /echo.
    path: String,
    /// The payload as JSON (default: null).
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
    let (target, is_call) = match command {
        Command::Call(target) => (target, true),
        Command::Emit(target) => (target, false),
    };
    let payload: Value = match &target.json {
        Some(text) => serde_json::from_str(text).map_err(|e| format!("the payload is not JSON: {e}"))?,
        None => Value::Null,
    };
    let timeout = Duration::try_from_secs_f64(target.timeout).map_err(|e| format!("--timeout: {e}"))?;
    let mut builder = Client::builder(&target.url).timeout(timeout);
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
    if is_call {
        let reply: Value = client.call(&target.path, &payload).await.map_err(|e| e.to_string())?;
        println!("{reply}");
    } else {
        client.emit(&target.path, &payload).await.map_err(|e| e.to_string())?;
        client.close().await;
    }
    Ok(())
}
