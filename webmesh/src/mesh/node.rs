//! What a node knows about each node of its mesh, itself included.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One node of a mesh, as the node that reports it sees it: what
/// [`Mesh::nodes`](crate::Mesh::nodes) lists, [`Mesh::watch`](crate::Mesh::watch)
/// streams, and the events of the reserved topics `/_mesh/nodes/{id}` carry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Node {
    /// Unique to one run of one process: a node that restarts has a new id.
    pub id: String,
    /// The service it runs (`WEBMESH_NAME`); several nodes may share one.
    pub name: String,
    /// The URL other nodes dial to reach it.
    pub url: String,
    /// The version of webmesh it runs, or of the service when it set one
    /// in its metadata under `version`.
    pub version: String,
    /// Where it stands, from the reporting node's view.
    pub state: NodeState,
    /// When the reporting node last heard from it, in milliseconds since
    /// the Unix epoch.
    pub last_seen_ms: u64,
    /// Its latest status report, once one came.
    pub status: Option<NodeStatus>,
    /// The paths and patterns it serves.
    pub routes: Routes,
    /// What its operator attached to it (region, zone, build...).
    pub metadata: BTreeMap<String, String>,
    /// The URLs of the nodes it saw `up` when it last reported itself: how
    /// nodes that joined at the same time learn of each other.
    #[serde(default)]
    pub peers: Vec<String>,
    /// A webmesh 0.1.2 (Python) server declared as a peer: it cannot
    /// introduce itself, report a status or carry events.
    #[serde(default)]
    pub legacy: bool,
    /// Its last will: published once in the mesh if it dies (not when it
    /// leaves). See [`MeshBuilder::will`](crate::MeshBuilder::will).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will: Option<NodeWill>,
}

/// A node's last will: the event one surviving node publishes when the
/// node is `down`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeWill {
    /// The topic it is published on.
    pub topic: String,
    /// Its data.
    pub data: serde_json::Value,
}

/// Where a node stands, from one node's view of it.
///
/// Each node decides this alone from its own link to the other: there is
/// no agreement between nodes, so during a partition each side sees the
/// other `down`, and both see each other `up` again once they relink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Linked: calls and events go to it.
    Up,
    /// Its link dropped and is being re-established; calls skip it.
    Suspect,
    /// Not back within [`MeshBuilder::down_after`](crate::MeshBuilder::down_after)
    /// of its link dropping. It is still dialled, and `up` again if it comes back.
    Down,
    /// It said goodbye as it shut down gracefully; it is no longer dialled.
    Left,
}

impl NodeState {
    /// `up`, `suspect`, `down` or `left`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Up => "up",
            NodeState::Suspect => "suspect",
            NodeState::Down => "down",
            NodeState::Left => "left",
        }
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node's report of itself, sent every
/// [`status_interval`](crate::MeshBuilder::status_interval).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NodeStatus {
    /// Milliseconds since it started.
    pub uptime_ms: u64,
    /// Its open WebSocket connections (clients and other nodes' links).
    pub connections: u64,
    /// Calls and emits its handlers finished since it started.
    pub calls_handled: u64,
    /// Those that answered with an error.
    pub calls_failed: u64,
    /// Calls and emits its handlers run now.
    pub calls_in_flight: u64,
    /// Calls and emits its handlers finished per second, over the time
    /// since its previous report.
    #[serde(default)]
    pub calls_per_second: f64,
    /// Events published on it since it started.
    pub events_published: u64,
    /// Events it dropped for subscribers that did not keep up.
    pub events_dropped: u64,
    /// Over NATS, how many times it may have failed to send its events to
    /// the other nodes (dropped while NATS was too slow or cut off, or too
    /// large for it). Each rise tells the subscribers of the other nodes
    /// that they may have lost events ([`Error::Lagged`](crate::Error::Lagged)).
    /// Over links, 0: a link tells its own losses.
    #[serde(default)]
    pub event_gaps: u64,
}

/// The route table a node serves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Routes {
    /// Paths of its call/emit handlers (`#[webmesh::on]`), as declared.
    pub calls: Vec<String>,
    /// Patterns of its subscribe handlers (`#[webmesh::subscribe]`).
    pub subscribe: Vec<String>,
    /// Patterns of its publish handlers (`#[webmesh::publish]`).
    pub publish: Vec<String>,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
