const PATH: &str = "/echo";

#[webmesh::on(PATH)]
async fn handler() {}

fn main() {}
