use webmesh::extract::Path;

#[webmesh::on("/jobs")]
async fn handler(Path(id): Path<u64>) -> u64 {
    id
}

// Through another name, too: the check is on the type.
type JobId = webmesh::extract::Path<u64>;

#[webmesh::publish("/jobs/done")]
async fn renamed(_conn: webmesh::Connection, job: JobId) -> Result<(), String> {
    Err(job.0.to_string())
}

fn main() {}
