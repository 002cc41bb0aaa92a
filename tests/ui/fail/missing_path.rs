#[webmesh::on]
async fn handler() {}

fn main() {}
