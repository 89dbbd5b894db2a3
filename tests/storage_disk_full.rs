//! A full disk, for real: a size-capped tmpfs, filled up. Writes fail with
//! `NoSpace` (HTTP 507) while reads go on; once space returns, the store
//! reopens itself and takes writes again, and nothing acknowledged is lost.
//!
//! Mounting needs root. CI runs these tests as root; anywhere else they fail
//! with a message saying so rather than pass without testing anything.

mod common;

use std::fs::File;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{NodeProc, client};
use rand::{RngCore, SeedableRng};
use reqwest::StatusCode;
use vinzclortho::core::key::ObjectKey;
use vinzclortho::core::object::{Content, Mutation, Object};
use vinzclortho::core::ring::Partition;
use vinzclortho::core::vclock::VersionVector;
use vinzclortho::storage::{RocksOptions, RocksStore, StorageError, Store};

const MIB: u64 = 1024 * 1024;
const FS_MIB: u64 = 24;
const VALUE_BYTES: usize = 256 * 1024;
/// Objects written before the filler file, then at most this many more
/// until the disk is full (24 MiB of tmpfs hold fewer than 100).
const WRITES_BEFORE_FILLER: u64 = 4;
const WRITES_UNTIL_FULL_MAX: u64 = 100;
/// Free space the filler leaves, so the disk fills under writes. Small, so
/// that once the filler is gone there is room for the reopen: the WAL's
/// size again plus 4 MiB.
const FILLER_LEAVES_BYTES: u64 = 2 * MIB;
/// The store checks for free space once a second; this is plenty.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A tmpfs of a fixed size at a fresh directory (one per test, so tests run
/// in parallel), unmounted on drop, even when the test fails.
struct Tmpfs {
    /// Removed after the unmount (fields drop after `Drop::drop`).
    _outer: tempfile::TempDir,
    mount: PathBuf,
}

impl Tmpfs {
    fn mount(size_mib: u64) -> Tmpfs {
        let outer = tempfile::tempdir().unwrap();
        let mount = outer.path().join("mnt");
        std::fs::create_dir(&mount).unwrap();
        let size = format!("size={size_mib}m");
        let output = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(&mount).output();
        let why = match output {
            Ok(o) if o.status.success() => return Tmpfs { _outer: outer, mount },
            Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
            Err(e) => format!("cannot run mount: {e}"),
        };
        panic!(
            "cannot mount a {size_mib} MiB tmpfs at {} ({why}): the disk-full tests need root to mount a \
             size-capped filesystem (CI runs them as root)",
            mount.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount").arg(&self.mount).status().is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds a file open: detach it now, freed when closed.
            let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
        }
    }
}

/// Fills the filesystem holding `path` with a file, then frees the last
/// `leave_bytes` of it.
fn fill(path: &Path, leave_bytes: u64) {
    let mut file = File::create(path).unwrap();
    let chunk = vec![0xa5u8; MIB as usize];
    let full = (0..=FS_MIB).any(|_| match file.write_all(&chunk) {
        Ok(()) => false,
        Err(e) if e.kind() == ErrorKind::StorageFull => true,
        Err(e) => panic!("filling {}: {e}", path.display()),
    });
    assert!(full, "wrote more than {FS_MIB} MiB to {} without filling it: is it a tmpfs?", path.display());
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(leave_bytes)).unwrap();
}

/// Incompressible, and different for every `i`.
fn value(i: u64) -> Vec<u8> {
    let mut v = vec![0; VALUE_BYTES];
    rand::rngs::StdRng::seed_from_u64(i).fill_bytes(&mut v);
    v
}

fn key(i: u64) -> ObjectKey {
    ObjectKey::in_default_bucket(format!("k{i:03}"))
}

fn object(i: u64) -> Object {
    let content = Content {
        value: Bytes::from(value(i)),
        content_type: "application/octet-stream".into(),
        last_modified_ms: i,
        meta: Default::default(),
    };
    let mut o = Object::new();
    o.update(7, &VersionVector::new(), Mutation::Put(content)).unwrap();
    o
}

/// Every object lives in one partition, so one scan sees them all.
const P: Partition = 3;
/// The write that proves recovery goes elsewhere: the scan must not see it.
const P_AFTER: Partition = 9;
const AFTER: u64 = 999;

/// Polls `check` until it holds; at the deadline, fails showing what the
/// filesystem at `mount` looked like.
fn wait_for_recovery(mount: &Path, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + RECOVERY_TIMEOUT;
    while !check() {
        if Instant::now() > deadline {
            let df = Command::new("df").arg("-B1").arg(mount).output().unwrap();
            let ls = Command::new("ls").arg("-lsR").arg(mount).output().unwrap();
            panic!(
                "timed out after {RECOVERY_TIMEOUT:?} waiting for {what}\n{}{}",
                String::from_utf8_lossy(&df.stdout),
                String::from_utf8_lossy(&ls.stdout)
            );
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

fn assert_scan_finds(store: &RocksStore, acked: &[u64], when: &str) {
    let scanned: Vec<(ObjectKey, Object)> = store.scan_partition(P).unwrap().map(Result::unwrap).collect();
    let want: Vec<(ObjectKey, Object)> = acked.iter().map(|&i| (key(i), object(i))).collect();
    assert!(scanned == want, "scan {when}: {} objects, not the {} acknowledged", scanned.len(), want.len());
}

/// Clears a flag when dropped, panics included: a thread waiting on it
/// must stop before a failing test's scope can end.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

fn assert_all_readable(store: &RocksStore, acked: &[u64], when: &str) {
    for &i in acked {
        assert_eq!(store.get(P, &key(i)).unwrap(), Some(object(i)), "object {i} {when}");
    }
}

#[test]
fn a_full_store_keeps_its_data_and_takes_writes_again_once_space_returns() {
    // The store logs entering and leaving the full state: shown on failure.
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let fs = Tmpfs::mount(FS_MIB);
    let (dir, filler) = (fs.mount.join("db"), fs.mount.join("filler"));
    let store = RocksStore::open(&dir, &RocksOptions::default()).unwrap();
    store.put_meta("identity", b"me").unwrap();
    let mut acked = Vec::new();
    for i in 0..WRITES_BEFORE_FILLER {
        store.put(P, &key(i), &object(i)).unwrap();
        acked.push(i);
    }
    fill(&filler, FILLER_LEAVES_BYTES);
    let full = (WRITES_BEFORE_FILLER..WRITES_BEFORE_FILLER + WRITES_UNTIL_FULL_MAX).any(|i| {
        match store.put(P, &key(i), &object(i)) {
            Ok(()) => acked.push(i),
            Err(StorageError::NoSpace(_)) => return true,
            Err(e) => panic!("put {i} failed with {e}, not for lack of space"),
        }
        false
    });
    assert!(full, "no put failed for lack of space after {WRITES_UNTIL_FULL_MAX} puts");
    assert!(acked.len() as u64 > WRITES_BEFORE_FILLER, "the space left by the filler took no write");

    // Full: writes fail fast, reads and scans work.
    let err = store.put(P_AFTER, &key(AFTER), &object(AFTER)).unwrap_err();
    assert!(matches!(err, StorageError::NoSpace(_)), "{err}");
    assert_all_readable(&store, &acked, "while full");
    assert_scan_finds(&store, &acked, "while full");
    assert_eq!(store.get_meta("identity").unwrap(), Some(b"me".to_vec()));

    std::fs::remove_file(&filler).unwrap();
    let reading = AtomicBool::new(true);
    std::thread::scope(|s| {
        // Readers during the reopen: they wait for it, never fail.
        let reader = s.spawn(|| {
            while reading.load(Ordering::Relaxed) {
                assert_all_readable(&store, &acked, "during recovery");
            }
        });
        let stop_reader = StopOnDrop(&reading);
        wait_for_recovery(&fs.mount, "a put to succeed once space is back", || {
            match store.put(P_AFTER, &key(AFTER), &object(AFTER)) {
                Ok(()) => true,
                Err(StorageError::NoSpace(_)) => false,
                Err(e) => panic!("put failed with {e} while space came back"),
            }
        });
        drop(stop_reader);
        reader.join().unwrap();
    });

    assert_all_readable(&store, &acked, "after recovery");
    assert_scan_finds(&store, &acked, "after recovery");
    assert_eq!(store.get(P_AFTER, &key(AFTER)).unwrap(), Some(object(AFTER)));
    store.put_meta("after", b"yes").unwrap();

    drop(store);
    let store = RocksStore::open(&dir, &RocksOptions::default()).unwrap();
    assert_all_readable(&store, &acked, "after a fresh open");
    assert_eq!(store.get(P_AFTER, &key(AFTER)).unwrap(), Some(object(AFTER)));
    assert_eq!(store.get_meta("identity").unwrap(), Some(b"me".to_vec()));
    assert_eq!(store.get_meta("after").unwrap(), Some(b"yes".to_vec()));
}

#[test]
fn a_full_node_answers_507_then_200_again_once_space_returns() {
    let fs = Tmpfs::mount(FS_MIB);
    // The mount is the data directory itself: the node's log goes next to
    // it (see NodeProc), off the full filesystem.
    let node = NodeProc::start(&fs.mount, &["-a", "127.0.0.1:0"]);
    let http = client();
    let put = |i: u64| http.put(node.url(&format!("/store/k{i}"))).body(value(i)).send().unwrap();
    let mut acked = Vec::new();
    for i in 0..WRITES_BEFORE_FILLER {
        assert_eq!(put(i).status(), StatusCode::OK, "put {i}");
        acked.push(i);
    }
    let filler = fs.mount.join("filler");
    fill(&filler, FILLER_LEAVES_BYTES);
    let mut refused = None;
    for i in WRITES_BEFORE_FILLER..WRITES_BEFORE_FILLER + WRITES_UNTIL_FULL_MAX {
        let r = put(i);
        match r.status() {
            StatusCode::OK => acked.push(i),
            StatusCode::INSUFFICIENT_STORAGE => {
                refused = Some(r.text().unwrap());
                break;
            }
            status => panic!("put {i}: {status} {}", r.text().unwrap()),
        }
    }
    let refused = refused.expect("no put was refused with 507 on a full disk");
    assert!(refused.contains("space"), "507 without saying why: {refused:?}");

    assert_node_has(&node, &acked, "while full");

    std::fs::remove_file(&filler).unwrap();
    wait_for_recovery(&fs.mount, "PUT to return 200 once space is back", || {
        let r = put(AFTER);
        match r.status() {
            StatusCode::OK => true,
            StatusCode::INSUFFICIENT_STORAGE => false,
            status => panic!("put while space came back: {status} {}", r.text().unwrap()),
        }
    });
    acked.push(AFTER);
    assert_node_has(&node, &acked, "after recovery");
}

fn assert_node_has(node: &NodeProc, acked: &[u64], when: &str) {
    let http = client();
    for &i in acked {
        let r = http.get(node.url(&format!("/store/k{i}"))).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "k{i} {when}");
        assert!(r.bytes().unwrap() == value(i), "k{i} {when}: wrong value");
    }
}
