#[webmesh::on("echo")]
async fn handler() {}

fn main() {}
