//! The mesh's own messages: ordinary CALLs, SUBSCRIBEs and EVENTs on
//! reserved paths (PROTOCOL.md, "Mesh"), so that a plain client never
//! receives one it did not ask for.

use serde::{Deserialize, Serialize};

use super::Node;

/// Paths and topics under this prefix belong to the mesh: clients may
/// subscribe to them, never publish there.
pub(crate) const RESERVED: &str = "/_mesh/";

/// CALL: a node introduces itself over the link it dialled; the answer is
/// the other's introduction.
pub(crate) const HELLO: &str = "/_mesh/hello";
/// CALL: a node leaves gracefully.
pub(crate) const GOODBYE: &str = "/_mesh/goodbye";
/// CALL: a call a client made on another node, for a path this node serves.
pub(crate) const FORWARD: &str = "/_mesh/forward";
/// EMIT: a node publishes the will of a node that died: the others do not.
pub(crate) const WILL_CLAIM: &str = "/_mesh/will";
/// CALL: the node's view of the mesh, for anyone (`webmesh nodes`).
pub(crate) const NODES: &str = "/_mesh/nodes";

/// The topic of node `id`'s changes, as the publishing node sees them.
pub(crate) fn node_topic(id: &str) -> String {
    format!("/_mesh/nodes/{id}")
}

/// The header by which a link says which node dialled it.
pub(crate) const NODE_HEADER: &str = "webmesh-node";
/// The header carrying the mesh's shared secret.
pub(crate) const SECRET_HEADER: &str = "webmesh-mesh-secret";

/// The data of a HELLO, and of its reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Who is speaking.
    pub(crate) node: Node,
    /// The URLs of the nodes it knows `up`, so that a newcomer dials them.
    pub(crate) members: Vec<String>,
}

/// The data of a GOODBYE.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Goodbye {
    /// The node leaving.
    pub(crate) id: String,
}

/// What a forwarded call got from the node that ran it: its value, or its
/// error as that node gave it (code, message and data), for the client.
pub(crate) type Answered = Result<rmpv::Value, crate::CallError>;

/// The data of a FORWARD.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Forward {
    /// The path the client called.
    pub(crate) path: String,
    /// Its data, as the client sent it.
    pub(crate) data: rmpv::Value,
    /// The identity the entry node's authentication gave the caller, when
    /// the mesh forwards identities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) identity: Option<rmpv::Value>,
}
