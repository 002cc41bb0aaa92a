#[webmesh::on("/files/{*rest}/meta")]
async fn handler() {}

fn main() {}
