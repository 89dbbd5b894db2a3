//! Deliberate bugs for the fault suite, present only in builds with the
//! `fault-injection` feature (test builds) and active only when the process
//! runs with `VINZCLORTHO_FAULT` naming them. A checker that never sees a
//! broken build fail proves nothing.

use std::sync::OnceLock;

/// `VINZCLORTHO_FAULT=ack-before-quorum`: a write is acknowledged as soon as
/// the stamping replica stored it, before (and without) replication: W is
/// silently 1.
pub fn ack_before_quorum() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let on = std::env::var("VINZCLORTHO_FAULT").is_ok_and(|f| f == "ack-before-quorum");
        if on {
            tracing::warn!("VINZCLORTHO_FAULT=ack-before-quorum: writes are acknowledged before their quorum");
        }
        on
    })
}
