//! Wills of nodes: when a node dies, one surviving node publishes its will,
//! chosen without a coordinator (PROTOCOL.md, "Wills of nodes").
//!
//! Every node knows each other's will from its introduction and status
//! reports. When a node is `down`, its *heir* publishes the will: the node
//! of the lowest id among those `up`, as each survivor sees them, itself
//! included. Survivors that see each other `up` agree on the heir without a
//! word. The heir first tells the others it publishes (a CLAIM), then
//! publishes; another survivor that deferred to an heir which goes `down`
//! or `left` before claiming takes its place.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::messages::{RESERVED, WILL_CLAIM};
use super::{MeshInner, NodeState, NodeWill};
use crate::pubsub::{validate_topic, TopicLimits};
use crate::{CallError, Error};

impl NodeWill {
    /// A will of `data` on `topic`, which must be a topic a node may publish on.
    pub(crate) fn new(topic: String, data: &(impl Serialize + ?Sized)) -> Result<Self, Error> {
        validate_topic(&topic, TopicLimits::DEFAULT).map_err(|e| Error::Config(format!("the will's topic: {e}")))?;
        if topic.starts_with(RESERVED) {
            return Err(Error::Config(format!("the will's topic: topics under {RESERVED} are the mesh's")));
        }
        let data = serde_json::to_value(data).map_err(|e| Error::Config(format!("the will's data: {e}")))?;
        Ok(Self { topic, data })
    }
}

/// The data of a CLAIM: the node whose will the sender publishes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub(crate) of: String,
}

/// What became of the will of each dead node this node knows.
#[derive(Default)]
pub(crate) struct Heirs {
    fates: Mutex<HashMap<String, Fate>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Fate {
    /// Another node is the heir; it has not claimed yet.
    Deferred { heir: String },
    /// Published, here or by the node that claimed it.
    Published,
}

impl Heirs {
    fn fates(&self) -> std::sync::MutexGuard<'_, HashMap<String, Fate>> {
        self.fates.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MeshInner {
    /// Node `id` is `down`: its heir publishes its will.
    pub(crate) fn mourn(&self, id: &str) {
        // Over NATS, the survivors race for the dead node's record instead.
        #[cfg(feature = "nats")]
        if let Some(nats) = self.nats.get() {
            nats.mourn(id);
            return;
        }
        let Some(will) = self.members.get(id).and_then(|node| node.will) else { return };
        let heir = self.heir();
        {
            let mut fates = self.heirs.fates();
            if fates.get(id) == Some(&Fate::Published) {
                return;
            }
            if heir != self.id {
                tracing::debug!(dead = id, heir, "deferring a will to its heir");
                fates.insert(id.to_owned(), Fate::Deferred { heir });
                return;
            }
            fates.insert(id.to_owned(), Fate::Published);
        }
        self.execute(id, &will);
    }

    /// Node `gone` is `down` or `left`: the wills it was heir to and did
    /// not claim go to the next heir.
    pub(crate) fn heir_gone(&self, gone: &str) {
        let orphans: Vec<String> = self
            .heirs
            .fates()
            .iter()
            .filter(|(_, fate)| matches!(fate, Fate::Deferred { heir } if heir == gone))
            .map(|(id, _)| id.clone())
            .collect();
        for id in orphans {
            self.heirs.fates().remove(&id);
            self.mourn(&id);
        }
    }

    /// Node `by` claimed node `of`'s will: it publishes it, not this node.
    /// A claim from a node this one does not see alive is refused; one for
    /// a node this one sees `up` changes nothing (`by` sees it dead across
    /// a partition, and publishes it on its side).
    pub(crate) fn will_claimed(&self, of: &str, by: &str) -> Result<(), CallError> {
        if !matches!(self.members.state(by), Some(NodeState::Up | NodeState::Suspect)) {
            return Err(CallError::new(CallError::FORBIDDEN, "a claim from a node this node does not see alive"));
        }
        if self.members.state(of) == Some(NodeState::Up) {
            return Ok(());
        }
        tracing::debug!(dead = of, heir = by, "a will was claimed");
        self.heirs.fates().insert(of.to_owned(), Fate::Published);
        Ok(())
    }

    /// Node `id` is `up`, or reported itself: it is alive, and a will of
    /// its next death is for then.
    pub(crate) fn came_back(&self, id: &str) {
        self.heirs.fates().remove(id);
    }

    /// Forgets the fates of nodes no longer known.
    pub(crate) fn forget_fates(&self) {
        let known = self.members.snapshot();
        self.heirs.fates().retain(|id, _| known.iter().any(|n| n.id == *id));
    }

    /// The heir of a node that dies now, in this node's view: among the
    /// nodes `up` and those `suspect` (a link that flaps for one survivor
    /// must not make it choose another heir than the rest; if the heir is
    /// really gone, it is `down` soon, and the will passes on).
    fn heir(&self) -> String {
        let alive = |n: &super::Node| matches!(n.state, NodeState::Up | NodeState::Suspect) && !n.legacy;
        let candidates = self.members.snapshot().into_iter().filter(alive);
        candidates.map(|n| n.id).chain([self.id.clone()]).min().expect("this node at least")
    }

    /// Claims node `id`'s will to every node `up`, then publishes it.
    fn execute(&self, id: &str, will: &NodeWill) {
        tracing::info!(dead = id, topic = will.topic, "publishing the will of a node that died");
        let claim = Claim { of: id.to_owned() };
        for (_, link) in self.members.links_up() {
            let claim = claim.clone();
            self.tasks.spawn(async move {
                if let Err(e) = link.emit(WILL_CLAIM, &claim).await {
                    tracing::debug!("a will's claim was not sent: {e}");
                }
            });
        }
        if let Err(e) = self.hub.publish(&will.topic, &will.data) {
            tracing::warn!(dead = id, topic = will.topic, "a node's will could not be published: {e}");
        }
    }
}
