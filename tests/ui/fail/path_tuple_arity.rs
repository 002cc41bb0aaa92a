use webmesh::extract::Path;

#[webmesh::subscribe("/rooms/{room}")]
async fn handler(Path((room, n)): Path<(String, u32)>) -> Result<(), String> {
    Err(format!("{room} {n}"))
}

fn main() {}
