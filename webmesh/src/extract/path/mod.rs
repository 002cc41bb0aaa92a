mod de;

use std::fmt;

use serde::de::DeserializeOwned;

use super::{CallParts, FromCallParts};
use crate::{CallError, IntoCallError};

/// The parameters of the matched path, decoded into `T`.
///
/// `T` is a single value for one parameter, a tuple for several (in the
/// pattern's order), or a struct with a field per parameter name. A catch-all
/// `{*rest}` captures the rest of the path, slashes included.
///
/// ```
/// use serde::Deserialize;
/// use webmesh::extract::Path;
///
/// #[webmesh::on("/users/{id}")]
/// async fn user(Path(id): Path<u64>) -> String {
///     format!("user {id}")
/// }
///
/// #[webmesh::on("/rooms/{room}/messages/{n}")]
/// async fn message(Path((room, n)): Path<(String, u32)>) -> String {
///     format!("{room} #{n}")
/// }
///
/// #[derive(Deserialize)]
/// struct File {
///     bucket: String,
///     rest: String,
/// }
///
/// #[webmesh::on("/files/{bucket}/{*rest}")]
/// async fn file(Path(file): Path<File>) -> String {
///     format!("{}: {}", file.bucket, file.rest)
/// }
/// ```
///
/// A parameter that does not parse is answered with a `bad_payload` error
/// whose field is the parameter's name in braces, e.g. `{id}`.
///
/// With `#[webmesh::on]`, `#[webmesh::subscribe]` and `#[webmesh::publish]`,
/// a `Path` on a route without parameters does not compile, nor does a
/// tuple with more or fewer elements than the route has parameters:
///
/// ```compile_fail
/// use webmesh::extract::Path;
///
/// #[webmesh::on("/jobs")] // error: `Path` extracts the route's parameters, and `/jobs` has none
/// async fn job(Path(id): Path<u64>) -> u64 {
///     id
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send> FromCallParts for Path<T> {
    type Rejection = PathRejection;

    async fn from_call_parts(parts: &CallParts) -> Result<Self, PathRejection> {
        T::deserialize(de::Params(&parts.params)).map(Path)
    }
}

/// The path parameters did not decode into the type [`Path`] asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRejection {
    param: Option<String>,
    message: String,
}

impl PathRejection {
    /// The parameter at fault, if one is.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }
}

impl fmt::Display for PathRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.param {
            Some(param) => write!(f, "path parameter `{param}`: {}", self.message),
            None => write!(f, "path parameters: {}", self.message),
        }
    }
}

impl std::error::Error for PathRejection {}

impl serde::de::Error for PathRejection {
    fn custom<M: fmt::Display>(message: M) -> Self {
        Self { param: None, message: message.to_string() }
    }
}

impl IntoCallError for PathRejection {
    fn into_call_error(self) -> CallError {
        let field = self.param.as_ref().map_or_else(|| ".".to_owned(), |p| format!("{{{p}}}"));
        CallError::new(CallError::BAD_PAYLOAD, self.to_string()).with_data(serde_json::json!({ "field": field }))
    }
}
