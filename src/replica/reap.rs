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
//! "Tombstones and clock hygiene"), like Cassandra's gc_grace_seconds.
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
use crate::core::vclock::{ActorId, VersionVector};
#[cfg(doc)]
use crate::storage::Store;
use crate::storage::{Reaped, StorageError};

/// What a write onto a key starts from (read under the key's lock).
pub(super) struct Base {
    /// What is stored (empty when the key is absent).
    pub stored: Object,
    /// The key's effective state, every write's starting point: the stored
    /// object with the key's history record put back into its clock (the
    /// reaped tombstone itself when the key is absent).
    pub effective: Object,
    /// The key's record, if one is kept.
    pub history: Option<Reaped>,
}

impl Base {
    /// What to store for `merged` (a state built on `effective`): without
    /// the entries the record holds, so that a pruned clock stays pruned.
    pub fn to_store(&self, merged: &Object) -> Object {
        match &self.history {
            Some(history) => merged.without_history(&history.clock),
            None => merged.clone(),
        }
    }
}

impl Replica {
    /// What a write onto `key` starts from, under the key's lock: the stored
    /// object with the key's record (reaped tombstone or pruned clock
    /// entries) put back, so that a stale copy the record covers is dropped.
    pub(super) fn base(&self, partition: Partition, key: &ObjectKey) -> Result<Base, StorageError> {
        let stored = self.store.get(partition, key)?.unwrap_or_default();
        let history = self.store.reaped(partition, key)?;
        let effective = match &history {
            Some(history) => stored.with_history(&history.clock),
            None => stored.clone(),
        };
        Ok(Base { stored, effective, history })
    }

    /// The key's effective object: the stored one with its history record
    /// put back (the reaped tombstone when the key is absent); empty when
    /// there is neither. Anti-entropy exchanges these.
    pub async fn effective(self: &Arc<Self>, partition: Partition, key: ObjectKey) -> Result<Object, ReplicaError> {
        let _guard = self.stripe(&key).lock().expect("key lock");
        Ok(self.base(partition, &key)?.effective)
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
            let history = this.store.reaped(partition, &key)?;
            let Some(current) = this.store.get(partition, &key)? else {
                return Ok(history.is_some_and(|r| r.clock.descends(&clock)));
            };
            if !current.is_tombstone()
                || current.clock() != &clock
                || !this.store.hints_for(partition, &key)?.is_empty()
            {
                return Ok(false);
            }
            // The record keeps what the key's history held (pruned entries)
            // too: the whole effective clock of the tombstone.
            let clock = history.map_or(clock.clone(), |h| h.clock.merged(&clock));
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
                let base = this.base(partition, &key)?;
                let record = match &base.history {
                    Some(kept) => Reaped {
                        clock: kept.clock.clone().merged(&incoming.clock),
                        reaped_at_ms: kept.reaped_at_ms.max(incoming.reaped_at_ms),
                    },
                    None => incoming,
                };
                if base.history.as_ref() == Some(&record) {
                    continue;
                }
                // What the record covers leaves the object (a value the
                // delete superseded, entries pruned elsewhere).
                let effective = base.effective.with_history(&record.clock);
                let object = effective.without_history(&record.clock);
                this.store_with_history(partition, &key, &base.stored, &object, &record)?;
                changed += 1;
            }
            Ok(changed)
        })
        .await
    }

    /// Stores `record` for `key`, then `object` (`stored` before): the record
    /// first, so that a crash between the two leaves the old object with
    /// the new record, whose effective state is the same.
    fn store_with_history(
        &self,
        partition: Partition,
        key: &ObjectKey,
        stored: &Object,
        object: &Object,
        record: &Reaped,
    ) -> Result<(), StorageError> {
        if object.is_empty() {
            self.store.reap(partition, key, record)?;
        } else {
            self.store.put_reaped(partition, key, record)?;
            if object != stored {
                self.store.put(partition, key, object)?;
            }
        }
        if object != stored {
            self.observe(partition, key, stored, object);
        }
        Ok(())
    }

    /// Prunes `key`'s clock (clock hygiene, `services::reaper`): moves the
    /// entries of `actors` from the stored clock into the key's history
    /// record, if the stored clock is still exactly `expected`, none of
    /// them dots a sibling, and no hint is pending for the key. True if
    /// pruned, or if none of them is in the clock. Every merge
    /// and write starts from object and history together ([`Replica::base`]),
    /// so a stale copy the removed entries covered is still dropped.
    pub async fn prune(
        self: &Arc<Self>,
        partition: Partition,
        key: ObjectKey,
        expected: VersionVector,
        actors: Vec<ActorId>,
    ) -> Result<bool, ReplicaError> {
        let this = Arc::clone(self);
        self.write(move || {
            let _guard = this.stripe(&key).lock().expect("key lock");
            let base = this.base(partition, &key)?;
            if base.stored.is_empty() || actors.is_empty() {
                return Ok(false);
            }
            let history = base.history.as_ref().map(|h| h.clock.clone()).unwrap_or_default();
            if base.stored.clock() != &expected || !this.store.hints_for(partition, &key)?.is_empty() {
                return Ok(false);
            }
            let Some((pruned, removed)) = base.stored.pruned(&actors) else { return Ok(false) };
            if removed.is_empty() {
                // None of them is in this clock (pruned here already).
                return Ok(true);
            }
            let record = Reaped { clock: history.merged(&removed), reaped_at_ms: this.env.now_ms() };
            this.store_with_history(partition, &key, &base.stored, &pruned, &record)?;
            Ok(true)
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
    use crate::core::object::Mutation;
    // The replica tests' helpers: an in-memory replica, one key, a put.
    use crate::replica::tests::{key, put, replica, values};

    const P: Partition = 5;

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
        // The old clock stays in the key's record beside v2, not in v2's
        // clock: v1 arriving late is still dropped.
        let history = a.store().reaped(P, &key()).unwrap().unwrap();
        assert!(stored.with_history(&history.clock).clock().covers(v1.siblings()[0].dot));
        assert_eq!(a.merge(P, key(), v1).await.unwrap(), stored);
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
        // A key held live with the value the delete covered: it goes, the
        // record stays, as if this replica had reaped it.
        let c = replica();
        c.merge(P, key(), v1.clone()).await.unwrap();
        assert_eq!(c.merge_reaped(P, vec![(key(), record.clone())]).await.unwrap(), 1);
        assert_eq!(c.store().get(P, &key()).unwrap(), None);
        assert_eq!(c.store().reaped(P, &key()).unwrap(), Some(record));
    }

    /// Three replicas of a key whose clock went through `actors` (each a
    /// coordinator run that wrote once), all holding the same object, and
    /// the stale copy of the first value.
    async fn grown(actors: usize) -> (Vec<Arc<Replica>>, Object, Object) {
        let replicas: Vec<_> = (0..actors + 1).map(|_| replica()).collect();
        let mut object = Object::new();
        let mut stale = Object::new();
        for (i, r) in replicas[..actors].iter().enumerate() {
            r.merge(P, key(), object.clone()).await.unwrap();
            object = r.coordinate(P, key(), object.clock().clone(), put(&format!("v{i}"))).await.unwrap();
            if i == 0 {
                stale = object.clone();
            }
        }
        let holders: Vec<_> = (0..3).map(|_| replica()).collect();
        for h in &holders {
            h.merge(P, key(), object.clone()).await.unwrap();
        }
        (holders, object, stale)
    }

    fn oldest(object: &Object, keep: usize) -> Vec<ActorId> {
        let mut entries: Vec<_> =
            object.clock().iter().filter(|(a, _)| object.siblings().iter().all(|s| s.dot.actor != *a)).collect();
        entries.sort_by_key(|&(a, n)| (n, a));
        entries.iter().take(object.clock().len().saturating_sub(keep)).map(|&(a, _)| a).collect()
    }

    #[tokio::test]
    async fn a_pruned_key_drops_stale_copies_on_every_path_and_takes_old_contexts() {
        let (holders, object, stale) = grown(12).await;
        assert_eq!(object.clock().len(), 12);
        let drop = oldest(&object, 4);
        assert_eq!(drop.len(), 8);
        for h in &holders {
            assert!(h.prune(P, key(), object.clock().clone(), drop.clone()).await.unwrap());
            // A repeated call: the clock is not the expected one any more;
            // with the pruned clock, nothing is left to move.
            assert!(!h.prune(P, key(), object.clock().clone(), drop.clone()).await.unwrap());
            let now = h.get(P, key()).await.unwrap();
            assert!(h.prune(P, key(), now.clock().clone(), drop.clone()).await.unwrap());
        }
        let pruned = holders[0].get(P, key()).await.unwrap();
        assert_eq!(pruned.clock().len(), 4);
        assert_eq!(pruned.siblings(), object.siblings());
        // The stale first value, by read repair, transfer, hint: dropped,
        // never a sibling.
        let a = &holders[0];
        assert_eq!(a.merge(P, key(), stale.clone()).await.unwrap(), pruned);
        assert_eq!(a.merge_many(P, vec![(key(), stale.clone())]).await.unwrap(), 0);
        assert_eq!(a.merge_hinted(P, key(), stale.clone(), NodeId::new("n9")).await.unwrap(), pruned);
        // The unpruned object itself changes nothing either.
        assert_eq!(a.merge(P, key(), object.clone()).await.unwrap(), pruned);
        // A client PUT with the old (unpruned) context supersedes, and the
        // clock stays pruned.
        let b = &holders[1];
        let next = b.coordinate(P, key(), object.clock().clone(), put("next")).await.unwrap();
        assert_eq!(values(&next), BTreeSet::from(["next".to_owned()]));
        assert!(next.clock().len() <= 5, "{:?}", next.clock());
        // ...and so does one with the pruned context; the new value reaches
        // a replica that still held the stale one as a sibling-free win.
        let c = &holders[2];
        let later = c.coordinate(P, key(), pruned.clock().clone(), put("later")).await.unwrap();
        assert_eq!(values(&later), BTreeSet::from(["later".to_owned()]));
        let on_a = a.merge(P, key(), later.clone()).await.unwrap();
        let on_a = a.merge(P, key(), next.clone()).await.unwrap_or(on_a);
        assert_eq!(values(&on_a), BTreeSet::from(["later".to_owned(), "next".to_owned()]), "two concurrent writes");
        assert_eq!(a.merge(P, key(), stale).await.unwrap(), on_a);
    }

    #[tokio::test]
    async fn a_replica_that_lost_a_prune_is_healed_by_effective_objects_only() {
        // Y superseded S everywhere, then was pruned everywhere; a power
        // loss takes one replica back to S and Y as siblings, without the
        // history (the simulator's seed 27).
        let (holders, object, _) = grown(6).await;
        let s_value = {
            let other = replica();
            other.coordinate(P, key(), VersionVector::new(), put("S")).await.unwrap()
        };
        let (a, b) = (&holders[0], &holders[1]);
        let with_s = a.merge(P, key(), s_value.clone()).await.unwrap();
        let y = a.coordinate(P, key(), with_s.clock().clone(), put("Y")).await.unwrap();
        b.merge(P, key(), y.clone()).await.unwrap();
        // Everything but Y's own actor.
        let drop = oldest(&y, 1);
        assert!(drop.contains(&s_value.siblings()[0].dot.actor), "S's actor is pruned");
        assert!(a.prune(P, key(), y.clock().clone(), drop).await.unwrap());
        let lost = replica();
        lost.merge(P, key(), object.clone()).await.unwrap();
        lost.merge(P, key(), s_value.clone()).await.unwrap();
        // The stored (pruned) object does not cover S: it would stay.
        let stored = lost.merge(P, key(), a.get(P, key()).await.unwrap()).await.unwrap();
        assert!(values(&stored).contains("S"), "{stored:?}");
        // The effective one does (what read repair and anti-entropy send).
        let healed = lost.merge(P, key(), a.effective(P, key()).await.unwrap()).await.unwrap();
        assert_eq!(values(&healed), BTreeSet::from(["Y".to_owned()]));
    }

    #[tokio::test]
    async fn a_prune_is_refused_for_another_clock_a_sibling_dot_or_a_pending_hint() {
        let (holders, object, _) = grown(6).await;
        let a = &holders[0];
        let sibling_actor = object.siblings()[0].dot.actor;
        assert!(!a.prune(P, key(), object.clock().clone(), vec![sibling_actor]).await.unwrap());
        let drop = oldest(&object, 2);
        let other = object.clock().clone().merged(&VersionVector::from_entries([(7, 1)]));
        assert!(!a.prune(P, key(), other, drop.clone()).await.unwrap());
        a.store().put_hinted(P, &key(), None, &NodeId::new("n9")).unwrap();
        assert!(!a.prune(P, key(), object.clock().clone(), drop.clone()).await.unwrap());
        assert_eq!(a.get(P, key()).await.unwrap(), object);
        assert!(!a.prune(P, ObjectKey::in_default_bucket("none"), object.clock().clone(), drop).await.unwrap());
    }

    #[tokio::test]
    async fn a_pruned_key_moves_with_its_history_and_is_reaped_whole() {
        let (holders, object, stale) = grown(6).await;
        let drop = oldest(&object, 2);
        let a = &holders[0];
        assert!(a.prune(P, key(), object.clock().clone(), drop).await.unwrap());
        // A transfer to a new holder: its records, then its objects.
        let new = replica();
        new.merge_reaped(P, a.store().reaped_in(P).unwrap()).await.unwrap();
        new.merge_many(P, vec![(key(), a.get(P, key()).await.unwrap())]).await.unwrap();
        assert_eq!(new.get(P, key()).await.unwrap(), a.get(P, key()).await.unwrap());
        assert_eq!(new.merge(P, key(), stale.clone()).await.unwrap().clock().len(), 2);
        // A new holder that already had the unpruned object: pruned too.
        let had = replica();
        had.merge(P, key(), object.clone()).await.unwrap();
        had.merge_reaped(P, a.store().reaped_in(P).unwrap()).await.unwrap();
        assert_eq!(had.get(P, key()).await.unwrap(), a.get(P, key()).await.unwrap());
        // Deleted and reaped: the record holds the whole clock.
        let pruned = a.get(P, key()).await.unwrap();
        let tomb = a.coordinate(P, key(), pruned.clock().clone(), Mutation::Delete).await.unwrap();
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap());
        assert!(a.reap(P, key(), tomb.clock().clone()).await.unwrap(), "repeated: reaped already");
        for old in [&stale, &object, &pruned] {
            assert!(a.merge(P, key(), old.clone()).await.unwrap().is_empty());
        }
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
