//! Deliberate bugs for the fault suite, present only in builds with the
//! `fault-injection` feature (test builds) and active only when the process
//! runs with `VINZCLORTHO_FAULT` naming them. A checker that never sees a
//! broken build fail proves nothing.
//!
//! Each hook is a line or two in the file it breaks, guarded by
//! `#[cfg(feature = "fault-injection")]`; the decision lives here.

use std::sync::OnceLock;

use crate::core::vclock::ActorId;
use crate::storage::Store;

thread_local! {
    /// A fault switched on for this thread only: the deterministic simulator
    /// runs a whole cluster on one thread, and other tests run beside it.
    static THREAD_FAULT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Switches `name` on for the calling thread (and off with `None`),
/// whatever `VINZCLORTHO_FAULT` says.
pub fn set_for_thread(name: Option<&str>) {
    THREAD_FAULT.with(|f| *f.borrow_mut() = name.map(str::to_owned));
}

/// Whether the thread's fault, else `VINZCLORTHO_FAULT` (read once per
/// process per fault), names `name`; warns when the variable does, so a log
/// shows the build is broken on purpose.
fn active(cell: &'static OnceLock<bool>, name: &str, what: &str) -> bool {
    if let Some(on) = THREAD_FAULT.with(|f| f.borrow().as_ref().map(|f| f == name)) {
        return on;
    }
    *cell.get_or_init(|| {
        let on = std::env::var("VINZCLORTHO_FAULT").is_ok_and(|f| f == name);
        if on {
            tracing::warn!("VINZCLORTHO_FAULT={name}: {what}");
        }
        on
    })
}

/// `VINZCLORTHO_FAULT=ack-before-quorum`: a write is acknowledged as soon as
/// the stamping replica stored it, before (and without) replication: W is
/// silently 1.
pub fn ack_before_quorum() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    active(&ON, "ack-before-quorum", "writes are acknowledged before their quorum")
}

/// `VINZCLORTHO_FAULT=reuse-actor`: the replica stamps every write with one
/// actor per node, the same in every run and partition (derived from the
/// node id in the data directory) — the behaviour before per-run actors. A
/// node that lost the tail of its history (power loss, restored backup)
/// then reissues dots its peers hold for other values. None when off.
pub fn reuse_actor(store: &dyn Store) -> Option<ActorId> {
    static ON: OnceLock<bool> = OnceLock::new();
    if !active(&ON, "reuse-actor", "one actor per node for good: dots are reissued after a rollback") {
        return None;
    }
    let node_id = crate::storage::meta::load_or_init_node_id(store, 0).ok()?;
    Some(node_id ^ 0x5eed)
}

/// `VINZCLORTHO_FAULT=switch-before-data-moved`: the claimant makes a
/// target ring current as soon as it sets it, before any holder sent the
/// moving partitions: new holders serve reads they have no data for.
pub fn switch_before_data_moved() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    active(&ON, "switch-before-data-moved", "the ring switches before the data moved")
}
