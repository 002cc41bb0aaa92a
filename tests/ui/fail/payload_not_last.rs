#[webmesh::on("/echo")]
async fn handler(_data: u32, _conn: webmesh::Connection) {}

fn main() {}
