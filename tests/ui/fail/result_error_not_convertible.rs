#[derive(serde::Serialize)]
struct MyError;

#[webmesh::on("/echo")]
async fn handler() -> Result<u32, MyError> {
    Err(MyError)
}

fn main() {}
