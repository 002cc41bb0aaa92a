//! Handlers: plain functions whose arguments are extractors.
//!
//! Any `async fn` or `fn` whose arguments implement
//! [`FromCallParts`](crate::extract::FromCallParts) (the last one
//! [`FromCall`](crate::extract::FromCall), e.g. the payload) and whose output
//! implements [`IntoReply`] is a [`Handler`]. Closures are handlers too.

mod reply;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;

use futures_util::FutureExt;

pub(crate) use reply::ReplyKind;
pub use reply::{IntoReply, Reply};

use crate::extract::{CallParts, FromCall, FromCallParts};
use crate::marker::{Async, Sync};
use crate::{CallError, IntoCallError, Payload};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A function that answers calls.
///
/// Implemented for `async fn`s, `fn`s and closures of up to 16 arguments;
/// the `T` parameter lets one type have several implementations, and is
/// inferred. You never implement this trait yourself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a webmesh handler",
    label = "not a handler",
    note = "a handler is an `async fn` or `fn` whose arguments are extractors (the payload last) and whose return type is serializable, `()`, or `Result<T, E: IntoCallError>`"
)]
pub trait Handler<T>: Clone + Send + std::marker::Sync + Sized + 'static {
    /// Runs the handler for one call.
    fn call(self, parts: CallParts, payload: Payload) -> impl Future<Output = Reply> + Send + 'static;
}

/// A handler with its types erased, as the route table stores it.
/// Not public API.
#[doc(hidden)]
#[derive(Clone)]
pub struct BoxedHandler(Arc<dyn Fn(CallParts, Payload) -> BoxFuture<Reply> + Send + std::marker::Sync>);

impl BoxedHandler {
    pub(crate) fn new<H: Handler<T>, T>(handler: H) -> Self {
        Self(Arc::new(move |parts, payload| Box::pin(handler.clone().call(parts, payload))))
    }

    /// A handler that takes the payload as it came.
    pub(crate) fn from_fn(
        f: impl Fn(CallParts, Payload) -> BoxFuture<Reply> + Send + std::marker::Sync + 'static,
    ) -> Self {
        Self(Arc::new(f))
    }

    /// Runs the handler; a panic becomes an `internal` error reply. An
    /// error's detail is logged here, and sent only if the server exposes
    /// internal errors.
    pub(crate) async fn call(&self, parts: CallParts, payload: Payload) -> Reply {
        let path = parts.path.clone();
        let expose = parts.shared.expose_internal_errors;
        let mut reply = match AssertUnwindSafe((self.0)(parts, payload)).catch_unwind().await {
            Ok(reply) => reply,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("a panic without a message");
                Reply::error(CallError::internal("the handler panicked").with_detail(message))
            }
        };
        if let ReplyKind::Error(error) = &mut reply.0 {
            error.log_detail(&path, expose);
        }
        reply
    }
}

macro_rules! extract_or_reply {
    ($e:expr) => {
        match $e {
            Ok(value) => value,
            Err(rejection) => return Reply::error(IntoCallError::into_call_error(rejection)),
        }
    };
}

macro_rules! impl_handler {
    ([$($ty:ident),*], $last:ident) => {
        impl<F, Fut, Out, MR, ML, $($ty,)* $last> Handler<(Async, MR, ML, $($ty,)* $last,)> for F
        where
            F: FnOnce($($ty,)* $last) -> Fut + Clone + Send + std::marker::Sync + 'static,
            Fut: Future<Output = Out> + Send,
            Out: IntoReply<MR>,
            $($ty: FromCallParts,)*
            $last: FromCall<ML>,
        {
            #[allow(non_snake_case)]
            fn call(self, parts: CallParts, payload: Payload) -> impl Future<Output = Reply> + Send + 'static {
                async move {
                    $(let $ty = extract_or_reply!($ty::from_call_parts(&parts).await);)*
                    let $last = extract_or_reply!($last::from_call(&parts, payload).await);
                    self($($ty,)* $last).await.into_reply()
                }
            }
        }

        impl<F, Out, MR, ML, $($ty,)* $last> Handler<(Sync, MR, ML, $($ty,)* $last,)> for F
        where
            F: FnOnce($($ty,)* $last) -> Out + Clone + Send + std::marker::Sync + 'static,
            Out: IntoReply<MR>,
            $($ty: FromCallParts,)*
            $last: FromCall<ML>,
        {
            #[allow(non_snake_case)]
            fn call(self, parts: CallParts, payload: Payload) -> impl Future<Output = Reply> + Send + 'static {
                async move {
                    $(let $ty = extract_or_reply!($ty::from_call_parts(&parts).await);)*
                    let $last = extract_or_reply!($last::from_call(&parts, payload).await);
                    self($($ty,)* $last).into_reply()
                }
            }
        }
    };
}

impl<F, Fut, Out, MR> Handler<(Async, MR)> for F
where
    F: FnOnce() -> Fut + Clone + Send + std::marker::Sync + 'static,
    Fut: Future<Output = Out> + Send,
    Out: IntoReply<MR>,
{
    // Not an `async fn`: its future would capture the marker parameters,
    // which need not be `'static`.
    #[allow(clippy::manual_async_fn)]
    fn call(self, _parts: CallParts, _payload: Payload) -> impl Future<Output = Reply> + Send + 'static {
        async move { self().await.into_reply() }
    }
}

impl<F, Out, MR> Handler<(Sync, MR)> for F
where
    F: FnOnce() -> Out + Clone + Send + std::marker::Sync + 'static,
    Out: IntoReply<MR>,
{
    // Not an `async fn`: its future would capture the marker parameters,
    // which need not be `'static`.
    #[allow(clippy::manual_async_fn)]
    fn call(self, _parts: CallParts, _payload: Payload) -> impl Future<Output = Reply> + Send + 'static {
        async move { self().into_reply() }
    }
}

impl_handler!([], T1);
impl_handler!([T1], T2);
impl_handler!([T1, T2], T3);
impl_handler!([T1, T2, T3], T4);
impl_handler!([T1, T2, T3, T4], T5);
impl_handler!([T1, T2, T3, T4, T5], T6);
impl_handler!([T1, T2, T3, T4, T5, T6], T7);
impl_handler!([T1, T2, T3, T4, T5, T6, T7], T8);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8], T9);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8, T9], T10);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8, T9, T10], T11);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11], T12);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12], T13);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13], T14);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14], T15);
impl_handler!([T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, T13, T14, T15], T16);
