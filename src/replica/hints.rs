//! The replica's side of hinted handoff: storing a fallback's copy with its
//! hint, and dropping a hint once its owner has the copy. Both run under the
//! key's lock, like every other change of a key, so a write that lands
//! between a delivery and the hint's removal keeps the hint (it is
//! delivered again): a hint is deleted only if the copy is unchanged.

use std::sync::Arc;

use super::{Replica, ReplicaError};
use crate::core::key::{NodeId, ObjectKey};
use crate::core::object::Object;
use crate::core::ring::Partition;
use crate::storage::Hint;

impl Replica {
    /// Merges an object this node holds as a fallback for `target`, and
    /// stores the hint that `target` should get it, in one store write.
    /// Returns what is stored afterwards.
    pub async fn merge_hinted(
        self: &Arc<Self>,
        partition: Partition,
        key: ObjectKey,
        incoming: Object,
        target: NodeId,
    ) -> Result<Object, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let _guard = this.stripe(&key).lock().expect("key lock");
            // Onto the key's history if it has one (`replica::reap`).
            let base = this.base(partition, &key)?;
            let merged = base.to_store(&base.effective.merge(&incoming));
            let changed = (merged != base.stored).then_some(&merged);
            this.store.put_hinted(partition, &key, changed, &target)?;
            // Anti-entropy's tree of the partition must see every stored
            // change, or its next XOR update would start from a wrong base.
            if changed.is_none() {
                return Ok(base.stored);
            }
            this.observe(partition, &key, &base.stored, &merged);
            Ok(merged)
        })
        .await
    }

    /// Drops `hint` if the stored copy is still `delivered` (or less), the
    /// object its target acknowledged; true if it was dropped. A copy that
    /// changed since keeps its hint, to be delivered again.
    pub async fn hint_delivered(self: &Arc<Self>, hint: Hint, delivered: Object) -> Result<bool, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let _guard = this.stripe(&hint.key).lock().expect("key lock");
            let current = this.store.get(hint.partition, &hint.key)?.unwrap_or_default();
            if delivered.merge(&current) != delivered {
                return Ok(false);
            }
            this.store.remove_hint(&hint)?;
            Ok(true)
        })
        .await
    }
}
