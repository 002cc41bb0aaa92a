use serde::{Deserialize, Serialize};
use webmesh::extract::CallPath;
use webmesh::{CallError, Connection, IntoCallError, Reply, State};

#[derive(Deserialize)]
struct Req {
    name: String,
}

#[derive(Serialize)]
struct Resp {
    greeting: String,
}

struct MyError;

impl IntoCallError for MyError {
    fn into_call_error(self) -> CallError {
        CallError::new("mine", "my error")
    }
}

#[webmesh::on("/none")]
async fn none() {}

#[webmesh::on("/sync")]
fn sync(n: u32) -> u32 {
    n
}

#[webmesh::on("/typed")]
async fn typed(req: Req) -> Resp {
    Resp { greeting: req.name }
}

#[webmesh::on("/result")]
async fn result(n: u32) -> Result<u32, MyError> {
    if n > 0 { Ok(n) } else { Err(MyError) }
}

#[webmesh::on("/option")]
fn option(n: u32) -> Option<u32> {
    Some(n)
}

#[webmesh::on("/extractors")]
async fn extractors(conn: Connection, State(s): State<String>, CallPath(p): CallPath, data: Vec<u8>) -> String {
    format!("{} {s} {p} {}", conn.id(), data.len())
}

#[webmesh::on("/only-parts")]
async fn only_parts(conn: Connection) -> u64 {
    conn.id()
}

#[webmesh::on("/reply")]
async fn reply() -> Reply {
    Reply::value(1)
}

#[webmesh::on("/nested/path-with_chars.v2")]
pub(crate) async fn public() -> &'static str {
    "ok"
}

#[webmesh::on("/string-error")]
async fn string_error(n: u32) -> Result<u32, String> {
    Err(format!("{n} is wrong"))
}

#[webmesh::on("/sync-result")]
fn sync_result(n: u32) -> std::result::Result<u32, &'static str> {
    Ok(n)
}

fn main() {}
