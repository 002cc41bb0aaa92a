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

#[webmesh::on("/users/{id}")]
async fn one_parameter(webmesh::extract::Path(id): webmesh::extract::Path<u64>) -> u64 {
    id
}

#[webmesh::subscribe("/rooms/{room}/{*rest}")]
async fn parameters_as_a_tuple(
    webmesh::extract::Path((room, rest)): webmesh::extract::Path<(String, String)>,
) -> Result<(), String> {
    Err(format!("{room} {rest}"))
}

#[webmesh::on("/files/{name}")]
async fn parameter_as_a_one_tuple(webmesh::extract::Path((name,)): webmesh::extract::Path<(String,)>) -> String {
    name
}

/// An extractor of the application's own that happens to be called `Path`:
/// only webmesh's `Path` needs the route to have parameters.
mod own {
    pub struct Path<T>(pub T);

    impl<T: Default + Send> webmesh::extract::FromCallParts for Path<T> {
        type Rejection = std::convert::Infallible;

        async fn from_call_parts(_parts: &webmesh::extract::CallParts) -> Result<Self, Self::Rejection> {
            Ok(Path(T::default()))
        }
    }
}

#[webmesh::on("/own-path")]
async fn own_path(own::Path(n): own::Path<(u8, u8)>) -> u8 {
    n.0 + n.1
}

fn main() {}
