//! Extractors: what a handler's arguments can be.
//!
//! A handler's arguments are extracted from the call, axum style. All but the
//! last implement [`FromCallParts`] (connection, state, anything computed from
//! them); the last implements [`FromCall`], which every [`FromCallParts`] type
//! and every `T: DeserializeOwned` (the payload) does.
//!
//! | extractor | gives |
//! |---|---|
//! | any `T: DeserializeOwned`, last | the payload, decoded from MessagePack or JSON |
//! | [`Connection`](crate::Connection) | the caller's connection: id, address, push, extensions |
//! | [`State<T>`] | a value given to [`ServerBuilder::state`](crate::ServerBuilder::state) |
//! | [`Path<T>`] | the parameters of the matched path, `/users/{id}` |
//! | [`CallPath`] | the path that was called |
//! | [`Hub`](crate::Hub) | publishing to subscribers |
//! | [`Authenticated<I>`] | the identity the authentication hook returned |
//!
//! Write your own by implementing [`FromCallParts`]:
//!
//! ```
//! use webmesh::extract::{CallParts, FromCallParts};
//! use webmesh::CallError;
//!
//! /// The user name stored on the connection by a login handler.
//! struct User(String);
//!
//! impl FromCallParts for User {
//!     type Rejection = CallError;
//!
//!     async fn from_call_parts(parts: &CallParts) -> Result<Self, CallError> {
//!         parts
//!             .connection()
//!             .extension::<String>()
//!             .map(User)
//!             .ok_or_else(|| CallError::new("unauthenticated", "call /login first"))
//!     }
//! }
//!
//! #[webmesh::on("/whoami")]
//! async fn whoami(User(name): User) -> String {
//!     name
//! }
//! ```

mod authenticated;
mod parts;
mod path;
mod payload;
mod state;

use std::future::Future;

pub use authenticated::{Authenticated, Unauthenticated};
pub use parts::{CallParts, CallPath};
pub use path::{Path, PathRejection};
pub use state::{MissingState, State};

use crate::IntoCallError;

/// An extractor that reads only the call's context, never its payload; it may
/// appear at any position among a handler's arguments.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a webmesh extractor",
    label = "not an extractor",
    note = "extractors implement `webmesh::extract::FromCallParts`; the payload (any `T: DeserializeOwned`) must be the last argument"
)]
pub trait FromCallParts: Sized + Send {
    /// The error reply when extraction fails.
    type Rejection: IntoCallError;

    /// Extracts `Self` from the call's context.
    fn from_call_parts(parts: &CallParts) -> impl Future<Output = Result<Self, Self::Rejection>> + Send;
}

/// An extractor that may consume the payload; only a handler's last argument.
///
/// Implemented for every [`FromCallParts`] type and for every
/// `T: DeserializeOwned + Send`, which decodes the payload. The `M`
/// parameter only keeps those two blanket implementations apart.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a webmesh extractor",
    label = "not an extractor",
    note = "the last argument is the payload (any `T: serde::de::DeserializeOwned`) or a `webmesh::extract::FromCallParts` extractor"
)]
pub trait FromCall<M = crate::marker::ViaPayload>: Sized + Send {
    /// The error reply when extraction fails.
    type Rejection: IntoCallError;

    /// Extracts `Self` from the call's context and payload.
    fn from_call(
        parts: &CallParts,
        payload: crate::Payload,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send;
}

impl<T: FromCallParts> FromCall<crate::marker::ViaParts> for T {
    type Rejection = T::Rejection;

    fn from_call(
        parts: &CallParts,
        _payload: crate::Payload,
    ) -> impl Future<Output = Result<Self, Self::Rejection>> + Send {
        T::from_call_parts(parts)
    }
}
