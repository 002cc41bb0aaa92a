use std::any::type_name;
use std::marker::PhantomData;

use super::{CallParts, FromCallParts};
use crate::{CallError, IntoCallError};

/// The identity the server's authentication hook returned for this
/// connection (see [`ServerBuilder::authenticate`](crate::ServerBuilder::authenticate)).
///
/// ```
/// use webmesh::extract::Authenticated;
///
/// #[derive(Clone)]
/// struct User {
///     name: String,
/// }
///
/// #[webmesh::on("/whoami")]
/// async fn whoami(Authenticated(user): Authenticated<User>) -> String {
///     user.name
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated<I>(pub I);

impl<I: Clone + Send + Sync + 'static> FromCallParts for Authenticated<I> {
    type Rejection = Unauthenticated<I>;

    async fn from_call_parts(parts: &CallParts) -> Result<Self, Self::Rejection> {
        parts.connection().extension::<Authenticated<I>>().ok_or(Unauthenticated(PhantomData))
    }
}

/// A handler asked for an [`Authenticated<I>`] the connection does not have.
pub struct Unauthenticated<I>(PhantomData<fn() -> I>);

impl<I> std::fmt::Debug for Unauthenticated<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Unauthenticated<{}>", type_name::<I>())
    }
}

impl<I> IntoCallError for Unauthenticated<I> {
    fn into_call_error(self) -> CallError {
        CallError::new("unauthenticated", "this call needs an authenticated connection")
    }
}
