struct NotSerialize;

#[webmesh::on("/echo")]
async fn handler() -> NotSerialize {
    NotSerialize
}

fn main() {}
