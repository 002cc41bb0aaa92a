#[webmesh::on("/echo")]
async fn handler<T: serde::Serialize>(data: T) -> T {
    data
}

fn main() {}
