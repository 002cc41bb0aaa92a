//! Path parameters: matching, priorities, conflicts and the `Path` extractor.

mod common;

use common::TestServer;
use serde::Deserialize;
use serde_json::Value;
use webmesh::extract::Path;
use webmesh::{Error, Router, Server};

#[derive(Deserialize)]
struct FileRef {
    bucket: String,
    rest: String,
}

fn router() -> Router {
    Router::new()
        .on("/users/{id}", |Path(id): Path<u64>| async move { format!("user {id}") })
        .on("/users/me", || async { "me".to_owned() })
        .on("/rooms/{room}/messages/{n}", |Path((room, n)): Path<(String, u32)>| async move { format!("{room} #{n}") })
        .on("/files/{bucket}/{*rest}", |Path(f): Path<FileRef>| async move { format!("{}: {}", f.bucket, f.rest) })
        .on("/flag/{on}", |Path(on): Path<bool>, data: Value| async move { (on, data) })
}

#[tokio::test]
async fn parameters_are_typed_and_static_routes_win() {
    let server = TestServer::with_router(router()).await;
    let client = server.client().await;
    assert_eq!(client.call::<String>("/users/42", &()).await.unwrap(), "user 42");
    assert_eq!(client.call::<String>("/users/me", &()).await.unwrap(), "me");
    assert_eq!(client.call::<String>("/rooms/lobby/messages/7", &()).await.unwrap(), "lobby #7");
    assert_eq!(client.call::<String>("/files/photos/2024/06/cat.png", &()).await.unwrap(), "photos: 2024/06/cat.png");
    assert_eq!(client.call::<(bool, Value)>("/flag/true", &5).await.unwrap(), (true, Value::from(5)));
    assert!(matches!(client.call::<String>("/users", &()).await, Err(Error::NotFound { .. })));
    assert!(matches!(client.call::<String>("/users/42/more", &()).await, Err(Error::NotFound { .. })));
}

#[tokio::test]
async fn a_parameter_that_does_not_parse_is_a_bad_payload_naming_it() {
    let server = TestServer::with_router(router()).await;
    let client = server.client().await;
    match client.call::<String>("/users/abc", &()).await {
        Err(Error::BadPayload { field, message }) => {
            assert_eq!(field, "{id}");
            assert!(message.contains("cannot parse `abc` as u64"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    match client.call::<String>("/rooms/lobby/messages/-1", &()).await {
        Err(Error::BadPayload { field, .. }) => assert_eq!(field, "{n}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn conflicting_patterns_fail_start_up_naming_both() {
    for (a, b) in [("/users/{id}", "/users/{name}"), ("/a/{x}", "/a/{x}")] {
        let (router, line) = (Router::new().on(a, || async {}).on(b, || async {}), line!());
        let err = Server::builder().registered_handlers(false).router(router).addr("127.0.0.1:0").bind().await;
        let message = err.unwrap_err().to_string();
        assert!(message.contains(a) && message.contains(b), "{message}");
        assert_eq!(message.matches(&format!("tests/routing.rs:{line}")).count(), 2, "{message}");
    }
}
