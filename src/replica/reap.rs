//! The replica's side of tombstone reaping (`services::reaper` decides when).
//!
//! A tombstone is removed only if it is still exactly the one every primary
//! was found to hold ([`Replica::reap`]), under the key's lock, and the
//! removal leaves a reap record behind: the tombstone's clock and when it
//! was reaped (`Store::reap`, one write). The record is what keeps the
//! delete a causal fact after the tombstone is gone: every write path onto
//! an absent key (merge, merge_many for transfers, merge_hinted for
//! fallbacks, and with them read repair, hinted handoff and anti-entropy)
//! starts from the reaped tombstone instead of from nothing
//! ([`Replica::base`], `Object::onto_reaped`). So a copy the delete covered,
//! delivered late by a replica or fallback that missed it, changes nothing
//! and is dropped; a write the delete did not cover is stored with the old
//! clock included. A client write onto a reaped key is stamped on top of
//! the reaped clock too, so its dot is above every dot the partition's
//! actor issued for the key before the reap (the actor rule in `replica`).
//!
//! Anti-entropy sees a reap as the tombstone going away (old tombstone ->
//! absent), so the reaping replica's tree no longer counts the key. Until
//! every primary has reaped, an exchange finds the key on one side only and
//! repairs by merging the tombstone into the side that reaped it, where it
//! is dropped by the rule above: nothing is copied back.
//!
//! Reap records expire after the retention (`--reaped-retention-ms`,
//! [`Replica::expire_reaped`]). Before a record goes, the partition's actor
//! is retired (as before any removal): with the record gone this replica no
//! longer knows the key's history, so a later stamp must come from a fresh
//! actor. After the retention, a copy older than the delete can come back
//! if some node still holds one: a node that was away longer than the
//! retention must be wiped or force-removed, not brought back (README,
//! "Tombstones"), like Cassandra's gc_grace_seconds.
//!
//! Records are part of a partition's state: a partition transfer (a move
//! to new holders, the sweep after a ring change) ships them before the
//! objects ([`Store::reaped_in`]), and the receiver keeps them as its own
//! ([`Replica::merge_reaped`]), so a stale copy that reaches the
//! partition's new holders after a ring change is dropped there too.

use std::sync::Arc;

use super::{Replica, ReplicaError};
use crate::core::key::ObjectKey;
use crate::core::object::Object;
use crate::core::ring::Partition;
use crate::core::vclock::VersionVector;
use crate::storage::{Reaped, StorageError};
#[cfg(doc)]
use crate::storage::Store;

impl Replica {
    /// What a write onto `key` starts from, under the key's lock: the stored
    /// object, else the reaped tombstone if a reap record is kept, else
    /// nothing. Returns (what is stored, the base to merge onto).
    pub(super) fn base(&self, partition: Partition, key: &ObjectKey) -> Result<(Object, Object), StorageError> {
        if let Some(stored) = self.store.get(partition, key)? {
            return Ok((stored.clone(), stored));
        }
        let base = match self.store.reaped(partition, key)? {
            Some(reaped) => Object::tombstone(reaped.clock),
            None => Object::new(),
        };
        Ok((Object::new(), base))
    }

    /// Removes `key` if it still holds exactly the tombstone with `clock`,
    /// keeping a reap record of it; true if it was reaped, or had been
    /// already (absent, with a record of exactly that clock: the reaper
    /// asks again after a call of an earlier pass was lost). A write that
    /// landed since, or a copy whose hints are not delivered yet, keeps it.
    pub async fn reap(
        self: &Arc<Self>,
        partition: Partition,
        key: ObjectKey,
        clock: VersionVector,
    ) -> Result<bool, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let _guard = this.stripe(&key).lock().expect("key lock");
            let Some(current) = this.store.get(partition, &key)? else {
                return Ok(this.store.reaped(partition, &key)?.is_some_and(|r| r.clock == clock));
            };
            if !current.is_tombstone()
                || current.clock() != &clock
                || !this.store.hints_for(partition, &key)?.is_empty()
            {
                return Ok(false);
            }
            let reaped = Reaped { clock, reaped_at_ms: this.env.now_ms() };
            this.store.reap(partition, &key, &reaped)?;
            this.observe(partition, &key, &current, &Object::new());
            Ok(true)
        })
        .await
    }

    /// Takes the reap records of a partition transfer (the sender's records
    /// of keys it reaped): each is kept as if this replica had reaped the
    /// key. A key absent here gets the record (joined with one already kept:
    /// the union of both clocks, the later time); a key held here gets the
    /// reaped tombstone merged into its object, which drops what the delete
    /// covered and keeps what it did not (a write after the reap already
    /// includes the reaped clock). Returns how many keys changed.
    pub async fn merge_reaped(
        self: &Arc<Self>,
        partition: Partition,
        records: Vec<(ObjectKey, Reaped)>,
    ) -> Result<usize, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let mut changed = 0;
            for (key, incoming) in records {
                let _guard = this.stripe(&key).lock().expect("key lock");
                if let Some(stored) = this.store.get(partition, &key)? {
                    let merged = stored.merge(&Object::tombstone(incoming.clock));
                    if merged != stored {
                        this.store.put(partition, &key, &merged)?;
                        this.observe(partition, &key, &stored, &merged);
                        changed += 1;
                    }
                    continue;
                }
                let kept = this.store.reaped(partition, &key)?;
                let record = match &kept {
                    Some(kept) => Reaped {
                        clock: kept.clock.clone().merged(&incoming.clock),
                        reaped_at_ms: kept.reaped_at_ms.max(incoming.reaped_at_ms),
                    },
                    None => incoming,
                };
                if kept.as_ref() != Some(&record) {
                    // The key is absent: `Store::reap` only adds the record.
                    this.store.reap(partition, &key, &record)?;
                    changed += 1;
                }
            }
            Ok(changed)
        })
        .await
    }

    /// Drops up to `limit` reap records written before `before_ms` (the
    /// retention has passed); returns how many went.
    pub async fn expire_reaped(self: &Arc<Self>, before_ms: u64, limit: usize) -> Result<usize, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let due = this.store.reaped_before(before_ms, limit)?;
            // The history of these keys leaves with their records: no actor
            // of this run may stamp them again from a counter it forgot.
            let mut partitions: Vec<Partition> = due.iter().map(|(p, _)| *p).collect();
            partitions.dedup();
            for partition in partitions {
                this.retire_actor(partition);
            }
            let mut expired = 0;
            for (partition, key) in due {
                let _guard = this.stripe(&key).lock().expect("key lock");
                // A newer reap of the key since the listing keeps its record.
                if this.store.reaped(partition, &key)?.is_some_and(|r| r.reaped_at_ms < before_ms) {
                    this.store.remove_reaped(partition, &key)?;
                    expired += 1;
                }
            }
            Ok(expired)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::core::key::NodeId;
    use crate::core::object::{Content, Mutation};
    use crate::replica::SiblingLimits;
    use crate::storage::MemoryStore;

    const P: Partition = 5;

    fn replica() -> Arc<Replica> {
        Arc::new(Replica::new(Arc::new(MemoryStore::new()), SiblingLimits::default()))
    }

    fn key() -> ObjectKey {
        ObjectKey::in_default_bucket("k")
    }

    fn put(v: &str) -> Mutation {
        Mutation::Put(Content { value: v.to_owned().into(), content_type: "text/plain".into(), last_modified_ms: 0 })
    }

    fn values(o: &Object) -> BTreeSet<String> {
        o.siblings().iter().map(|s| String::from_utf8(s.content.value.to_vec()).unwrap()).collect()
    }

    /// A replica holding `v1`'s tombstone, and `v1` itself.
    async fn deleted(a: &Arc<Replica>) -> (Object, Object) {
        let v1 = a.coordinate(P, key(), VersionVector::new(), put("v1")).await.unwrap();
        let tomb = a.coordinate(P, key(), v1.clock().clone(), Mutation::Delete).await.unwrap();
        assert!(tomb.is_tombstone());
        (v1, tomb)
    }

    #[tokio::test]
    async fn reaps_only_the_expected_tombstone() {
        let a = replica();
        let v1 = a.coordinate(P, key(), VersionVector::new(), put("v1")).await.unwrap();
        // A live value is never reaped, whatever clock is asked for.
        assert!(!a.reap(P, key(), v1.clock().clone()).await.unwrap());
        let tomb = a.coordinate(P, key(), v1.clock().clone(), Mutation::Delete).await.unwrap();
        // Another clock than the stored one: a write landed since the check.
        assert!(!a.reap(P, key(), v1.clock().clone().merged(&VersionVector::from_entries([(7, 1)]))).await.unwrap());
        // A pending hint keeps it too.
        a.store().put_hinted(P, &key(), None, &NodeId::new("n9")).unwrap();
        assert!(!a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        a.store().remove_hint(&crate::storage::Hint { partition: P, key: key(), target: NodeId::new("n9") }).unwrap();
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        assert_eq!(a.store().get(P, &key()).unwrap(), None);
        assert_eq!(a.store().reaped(P, &key()).unwrap().unwrap().clock, *tomb.clock());
        // Absent now: reaped already, for that clock only.
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        assert!(!a.reap(P, key(), VersionVector::from_entries([(7, 1)])).await.unwrap());
        assert!(!a.reap(P, ObjectKey::in_default_bucket("never"), tomb.clock().clone()).await.unwrap());
    }

    #[tokio::test]
    async fn stale_copies_are_dropped_on_every_merge_path() {
        let a = replica();
        let (v1, tomb) = deleted(&a).await;
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        for stale in [&v1, &tomb] {
            assert!(a.merge(P, key(), stale.clone()).await.unwrap().is_empty());
            assert_eq!(a.merge_many(P, vec![(key(), stale.clone())]).await.unwrap(), 0);
            assert!(a.merge_hinted(P, key(), stale.clone(), NodeId::new("n2")).await.unwrap().is_empty());
            assert_eq!(a.store().get(P, &key()).unwrap(), None, "{stale:?} came back");
        }
        // A delete with no context changes nothing either.
        a.coordinate(P, key(), VersionVector::new(), Mutation::Delete).await.unwrap();
        assert_eq!(a.store().get(P, &key()).unwrap(), None);
    }

    #[tokio::test]
    async fn a_concurrent_write_survives_a_reap_and_keeps_the_old_clock() {
        let (a, b) = (replica(), replica());
        let (v1, tomb) = deleted(&a).await;
        // b never saw v1's delete, and took a blind write of its own.
        b.merge(P, key(), v1.clone()).await.unwrap();
        let concurrent = b.coordinate(P, key(), VersionVector::new(), put("v2")).await.unwrap();
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        let stored = a.merge(P, key(), concurrent).await.unwrap();
        assert_eq!(values(&stored), BTreeSet::from(["v2".to_owned()]));
        assert!(stored.clock().covers(v1.siblings()[0].dot));
    }

    #[tokio::test]
    async fn a_write_after_a_reap_gets_a_fresh_dot() {
        // Another replica still holds v1 (it missed the delete): the new
        // value must not reuse v1's dot, or that replica would take it for
        // v1 and drop it.
        let (a, b) = (replica(), replica());
        let (v1, tomb) = deleted(&a).await;
        b.merge(P, key(), v1.clone()).await.unwrap();
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        let v2 = a.coordinate(P, key(), VersionVector::new(), put("v2")).await.unwrap();
        assert_eq!(values(&v2), BTreeSet::from(["v2".to_owned()]));
        assert!(!v1.clock().covers(v2.siblings()[0].dot));
        let on_b = b.merge(P, key(), v2).await.unwrap();
        assert_eq!(values(&on_b), BTreeSet::from(["v2".to_owned()]));
    }

    #[tokio::test]
    async fn transferred_records_join_what_is_kept() {
        let (a, b) = (replica(), replica());
        let (v1, tomb) = deleted(&a).await;
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        let record = a.store().reaped(P, &key()).unwrap().unwrap();
        // Absent on b: b keeps the record as its own, and drops v1 after.
        assert_eq!(b.merge_reaped(P, vec![(key(), record.clone())]).await.unwrap(), 1);
        assert_eq!(b.store().reaped(P, &key()).unwrap(), Some(record.clone()));
        assert!(b.merge(P, key(), v1.clone()).await.unwrap().is_empty());
        // The same record again changes nothing; another one joins it.
        assert_eq!(b.merge_reaped(P, vec![(key(), record.clone())]).await.unwrap(), 0);
        let other = Reaped { clock: VersionVector::from_entries([(99, 2)]), reaped_at_ms: record.reaped_at_ms + 5 };
        assert_eq!(b.merge_reaped(P, vec![(key(), other.clone())]).await.unwrap(), 1);
        let joined = b.store().reaped(P, &key()).unwrap().unwrap();
        assert_eq!(joined.clock, record.clock.clone().merged(&other.clock));
        assert_eq!(joined.reaped_at_ms, other.reaped_at_ms);
        // A key held live: the reaped tombstone is merged into its object.
        let c = replica();
        c.merge(P, key(), v1.clone()).await.unwrap();
        assert_eq!(c.merge_reaped(P, vec![(key(), record.clone())]).await.unwrap(), 1);
        assert_eq!(c.store().get(P, &key()).unwrap(), Some(Object::tombstone(record.clock)));
    }

    #[tokio::test]
    async fn expired_records_go_and_retire_the_actor() {
        let a = replica();
        let (v1, tomb) = deleted(&a).await;
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        let at = a.store().reaped(P, &key()).unwrap().unwrap().reaped_at_ms;
        assert_eq!(a.expire_reaped(at, 10).await.unwrap(), 0);
        assert_eq!(a.expire_reaped(at + 1, 10).await.unwrap(), 1);
        assert_eq!(a.store().reaped(P, &key()).unwrap(), None);
        // With the history gone, a new write comes from a fresh actor.
        let v2 = a.coordinate(P, key(), VersionVector::new(), put("v2")).await.unwrap();
        assert_ne!(v2.siblings()[0].dot.actor, v1.siblings()[0].dot.actor);
    }
}
