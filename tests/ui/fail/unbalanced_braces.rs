#[webmesh::on("/users/{id")]
async fn handler() {}

fn main() {}
