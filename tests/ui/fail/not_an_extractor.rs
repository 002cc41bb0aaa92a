struct NotDeserialize;

#[webmesh::on("/echo")]
async fn handler(_data: NotDeserialize) {}

fn main() {}
