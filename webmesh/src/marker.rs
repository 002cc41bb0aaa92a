//! Marker types that keep blanket implementations apart. Not public API.

/// A handler that returns a future.
pub struct Async;
/// A handler that returns its reply directly.
pub struct Sync;
/// An extractor that reads the payload.
pub struct ViaPayload;
/// An extractor that reads only the call's context.
pub struct ViaParts;
/// A reply that is a serializable value.
pub struct ViaSerialize;
/// A reply that is a `Result`.
pub struct ViaResult;
/// A reply that is already a `Reply`.
pub struct ViaReply;
