//! Free space on the filesystem of a data directory: whether a RocksDB
//! store that ran out of space can be reopened without running out again.
//!
//! A reopen replays the write-ahead logs into memtables and flushes those to
//! table files before deleting the logs, so it needs about the logs' size
//! free, plus headroom for the manifest, the info log and the first writes.

use std::ffi::CString;
use std::io;
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Headroom kept beyond what a reopen writes...
const HEADROOM_BYTES_MIN: u64 = 4 * 1024 * 1024;
/// ...or this fraction of the filesystem (1/100), if larger.
const HEADROOM_DIVISOR: u64 = 100;

/// What `statvfs` reports, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Free to an unprivileged process (without the root reserve).
    pub available_bytes: u64,
    pub total_bytes: u64,
}

/// Whether a full store in `dir` has room to be reopened now.
pub fn has_room_to_reopen(dir: &Path) -> io::Result<bool> {
    Ok(enough_to_reopen(filesystem_space(dir)?, wal_bytes(dir)?))
}

/// The rule: room for the WAL's contents once more, plus headroom.
pub fn enough_to_reopen(space: FsSpace, wal_bytes: u64) -> bool {
    let headroom_bytes = HEADROOM_BYTES_MIN.max(space.total_bytes / HEADROOM_DIVISOR);
    space.available_bytes >= wal_bytes.saturating_add(headroom_bytes)
}

pub fn filesystem_space(path: &Path) -> io::Result<FsSpace> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    let mut stat = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c_path` is NUL-terminated and outlives the call; `stat` is
    // valid for writes of one `statvfs`, which the call fills on success.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    let block_bytes = if stat.f_frsize > 0 { wide(stat.f_frsize) } else { wide(stat.f_bsize) };
    Ok(FsSpace {
        available_bytes: wide(stat.f_bavail).saturating_mul(block_bytes),
        total_bytes: wide(stat.f_blocks).saturating_mul(block_bytes),
    })
}

/// `statvfs` fields are 32 or 64 bits wide depending on the platform.
fn wide(field: impl Into<u64>) -> u64 {
    field.into()
}

/// Bytes in RocksDB's write-ahead logs (`NNNNNN.log`) in `dir`. The info
/// log is `LOG` (or `LOG.old.*`), without that extension.
pub fn wal_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.path().extension().is_some_and(|ext| ext == "log") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn reopen_needs_the_wal_again_plus_headroom() {
        let small = |available_mib| FsSpace { available_bytes: available_mib * MIB, total_bytes: 24 * MIB };
        // 4 MiB minimum headroom on a small filesystem.
        assert!(!enough_to_reopen(small(3), 0));
        assert!(enough_to_reopen(small(4), 0));
        assert!(!enough_to_reopen(small(6), 3 * MIB));
        assert!(enough_to_reopen(small(7), 3 * MIB));
        // 1% on a large one.
        let large = FsSpace { available_bytes: 9 * 1024 * MIB, total_bytes: 1024 * 1024 * MIB };
        assert!(!enough_to_reopen(large, 0));
        assert!(enough_to_reopen(FsSpace { available_bytes: 11 * 1024 * MIB, ..large }, 0));
        assert!(!enough_to_reopen(small(24), u64::MAX));
    }

    #[test]
    fn counts_only_write_ahead_logs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("000004.log"), [0u8; 100]).unwrap();
        std::fs::write(dir.path().join("000009.log"), [0u8; 20]).unwrap();
        std::fs::write(dir.path().join("LOG"), [0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("LOG.old.1700000000"), [0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("000005.sst"), [0u8; 1000]).unwrap();
        assert_eq!(wal_bytes(dir.path()).unwrap(), 120);
    }

    #[test]
    fn measures_a_real_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let space = filesystem_space(dir.path()).unwrap();
        assert!(space.total_bytes > 0 && space.available_bytes <= space.total_bytes, "{space:?}");
        assert!(filesystem_space(&dir.path().join("missing")).is_err());
    }
}
