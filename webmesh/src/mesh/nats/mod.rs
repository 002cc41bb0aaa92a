//! The mesh over NATS: groundwork of the transport that will carry the
//! mesh's calls, events and membership through a NATS cluster instead of
//! direct links.

pub(crate) mod subject;
