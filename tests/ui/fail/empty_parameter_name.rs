#[webmesh::subscribe("/chat/{}")]
async fn handler() {}

fn main() {}
