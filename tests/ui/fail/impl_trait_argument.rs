#[webmesh::on("/echo")]
async fn handler(_data: impl serde::Serialize) {}

fn main() {}
