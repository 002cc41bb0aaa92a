struct Service;

impl Service {
    #[webmesh::on("/echo")]
    async fn handler(&self, n: u32) -> u32 {
        n
    }
}

fn main() {}
