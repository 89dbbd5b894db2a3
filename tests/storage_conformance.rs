//! One conformance suite, run against every storage engine.

use std::ops::ControlFlow;

use bytes::Bytes;
use tempfile::TempDir;
use vinzclortho::core::key::{NodeId, ObjectKey};
use vinzclortho::core::object::{Content, Link, Metadata, Mutation, Object};
use vinzclortho::core::vclock::VersionVector;
use vinzclortho::storage::{Hint, MemoryStore, Reaped, RocksOptions, RocksStore, Store};

/// A store plus whatever must outlive it (RocksDB's directory).
struct Harness {
    store: Box<dyn Store>,
    _dir: Option<TempDir>,
}

fn memory() -> Harness {
    Harness { store: Box::new(MemoryStore::new()), _dir: None }
}

fn rocks() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    Harness { store: Box::new(store), _dir: Some(dir) }
}

fn object(values: &[&str]) -> Object {
    let mut o = Object::new();
    for (i, v) in values.iter().enumerate() {
        let content = Content {
            value: Bytes::from(v.to_string()),
            content_type: "text/plain".into(),
            last_modified_ms: i as u64,
            // Riak's metadata is stored with the value (codec format 2).
            meta: Metadata {
                charset: Some("utf-8".into()),
                content_encoding: (i % 2 == 0).then(|| "gzip".to_owned()),
                content_language: None,
                user_meta: vec![("color".into(), format!("c{i}"))],
                links: vec![Link { bucket: "b".into(), key: Bytes::from(v.to_string()), tag: "t".into() }],
                indexes: vec![("n_int".into(), i.to_string()), ("name_bin".into(), v.to_string())],
            },
        };
        o.update(42, &VersionVector::new(), Mutation::Put(content)).unwrap();
    }
    o
}

fn scan(store: &dyn Store, partition: u32) -> Vec<(ObjectKey, Object)> {
    store.scan_partition(partition).unwrap().map(Result::unwrap).collect()
}

fn missing_key_is_none(s: &dyn Store) {
    assert_eq!(s.get(0, &ObjectKey::in_default_bucket("nope")).unwrap(), None);
}

fn put_then_get_round_trips_siblings(s: &dyn Store) {
    let k = ObjectKey::in_default_bucket("k");
    let o = object(&["a", "b", "c"]);
    s.put(3, &k, &o).unwrap();
    assert_eq!(s.get(3, &k).unwrap(), Some(o));
}

fn put_replaces(s: &dyn Store) {
    let k = ObjectKey::in_default_bucket("k");
    s.put(1, &k, &object(&["a"])).unwrap();
    s.put(1, &k, &object(&["b"])).unwrap();
    assert_eq!(s.get(1, &k).unwrap(), Some(object(&["b"])));
}

fn tombstones_keep_their_clock(s: &dyn Store) {
    let k = ObjectKey::in_default_bucket("gone");
    let mut o = object(&["a"]);
    let ctx = o.clock().clone();
    o.update(42, &ctx, Mutation::Delete).unwrap();
    assert!(o.is_tombstone());
    s.put(0, &k, &o).unwrap();
    let back = s.get(0, &k).unwrap().unwrap();
    assert!(back.is_tombstone());
    assert_eq!(back.clock(), &ctx);
}

fn remove_deletes(s: &dyn Store) {
    let k = ObjectKey::in_default_bucket("k");
    s.put(2, &k, &object(&["a"])).unwrap();
    s.remove(2, &k).unwrap();
    assert_eq!(s.get(2, &k).unwrap(), None);
    // Removing what is absent is fine.
    s.remove(2, &k).unwrap();
}

fn namespaces_and_partitions_do_not_collide(s: &dyn Store) {
    let keys = [
        ObjectKey::new("default", "ab", "c"),
        ObjectKey::new("default", "a", "bc"),
        ObjectKey::new("t", "default", "c"),
        ObjectKey::new("", "", ""),
    ];
    for (i, k) in keys.iter().enumerate() {
        s.put(5, k, &object(&[&i.to_string()])).unwrap();
    }
    s.put(6, &keys[0], &object(&["other partition"])).unwrap();
    for (i, k) in keys.iter().enumerate() {
        assert_eq!(s.get(5, k).unwrap(), Some(object(&[&i.to_string()])), "{k:?}");
    }
    assert_eq!(s.get(6, &keys[0]).unwrap(), Some(object(&["other partition"])));
}

fn binary_keys_and_large_values(s: &dyn Store) {
    let k = ObjectKey::new(&b"\xff\x00"[..], &b"\x00"[..], (0..=255u8).collect::<Vec<u8>>());
    let big = "x".repeat(4 << 20);
    s.put(9, &k, &object(&[&big])).unwrap();
    assert_eq!(s.get(9, &k).unwrap(), Some(object(&[&big])));
    assert_eq!(scan(s, 9), vec![(k, object(&[&big]))]);
}

fn scan_returns_exactly_one_partition_in_key_order(s: &dyn Store) {
    for p in [0u32, 1, 2, 1023] {
        for key in ["b", "a", "c"] {
            s.put(p, &ObjectKey::in_default_bucket(format!("{key}{p}")), &object(&[key])).unwrap();
        }
    }
    for p in [0u32, 1, 2, 1023] {
        let got: Vec<Bytes> = scan(s, p).into_iter().map(|(k, _)| k.key).collect();
        let want: Vec<Bytes> = ["a", "b", "c"].iter().map(|k| Bytes::from(format!("{k}{p}"))).collect();
        assert_eq!(got, want, "partition {p}");
    }
    assert!(scan(s, 3).is_empty());
    assert!(scan(s, 1024).is_empty());
}

fn scan_can_stop_early(s: &dyn Store) {
    for i in 0..100 {
        s.put(4, &ObjectKey::in_default_bucket(format!("k{i:03}")), &object(&["v"])).unwrap();
    }
    let mut seen = 0;
    let flow = s.scan_partition(4).unwrap().try_for_each(|row| {
        row.unwrap();
        seen += 1;
        if seen == 10 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
    });
    assert_eq!((flow, seen), (ControlFlow::Break(()), 10));
}

fn meta_round_trips(s: &dyn Store) {
    assert_eq!(s.get_meta("x").unwrap(), None);
    s.put_meta("x", b"1").unwrap();
    s.put_meta("x", b"2").unwrap();
    assert_eq!(s.get_meta("x").unwrap(), Some(b"2".to_vec()));
    // Metadata is not an object: scans do not see it.
    assert!((0..4).all(|p| scan(s, p).is_empty()));
}

fn put_many_writes_every_object_of_the_batch(s: &dyn Store) {
    let k = |i: usize| ObjectKey::in_default_bucket(format!("k{i}"));
    s.put(2, &k(0), &object(&["old"])).unwrap();
    let batch: Vec<(ObjectKey, Object)> = (0..50).map(|i| (k(i), object(&[&format!("v{i}")]))).collect();
    s.put_many(2, &batch).unwrap();
    for (key, object) in &batch {
        assert_eq!(s.get(2, key).unwrap().as_ref(), Some(object));
    }
    assert_eq!(scan(s, 2).len(), 50, "k0 replaced, not duplicated");
    assert!(scan(s, 3).is_empty(), "written to the batch's partition only");
    s.put_many(2, &[]).unwrap();
    assert_eq!(scan(s, 2).len(), 50);
}

fn stats_count_objects(s: &dyn Store) {
    for i in 0..10 {
        s.put(0, &ObjectKey::in_default_bucket(format!("k{i}")), &object(&["v"])).unwrap();
    }
    let stats = s.stats().unwrap();
    if stats.approximate {
        assert!(stats.objects >= 1, "{stats:?}");
    } else {
        assert_eq!(stats.objects, 10);
    }
    assert!(stats.bytes > 0);
}

fn reap_removes_the_object_and_keeps_its_record(s: &dyn Store) {
    let k = ObjectKey::in_default_bucket("gone");
    let other = ObjectKey::in_default_bucket("kept");
    s.put(5, &k, &object(&["a"])).unwrap();
    s.put(5, &other, &object(&["b"])).unwrap();
    let old = Reaped { clock: VersionVector::from_entries([(42, 1)]), reaped_at_ms: 10 };
    s.reap(5, &k, &old).unwrap();
    assert_eq!(s.get(5, &k).unwrap(), None);
    assert_eq!(s.reaped(5, &k).unwrap(), Some(old.clone()));
    // Records are per partition and key, and never show up in scans.
    assert_eq!(s.reaped(6, &k).unwrap(), None);
    assert_eq!(s.reaped(5, &other).unwrap(), None);
    assert_eq!(scan(s, 5), vec![(other.clone(), object(&["b"]))]);
    let new = Reaped { clock: VersionVector::from_entries([(42, 2)]), reaped_at_ms: 30 };
    s.reap(7, &other, &new).unwrap();
    // Due to expire: only records reaped before the bound, up to the limit.
    assert_eq!(s.reaped_before(20, 10).unwrap(), vec![(5, k.clone())]);
    assert_eq!(s.reaped_before(31, 10).unwrap(), vec![(5, k.clone()), (7, other.clone())]);
    assert_eq!(s.reaped_before(31, 1).unwrap().len(), 1);
    // A partition's records, for transfers: that partition's only.
    let third = ObjectKey::in_default_bucket("gone too");
    s.reap(5, &third, &new).unwrap();
    assert_eq!(s.reaped_in(5).unwrap(), vec![(k.clone(), old.clone()), (third.clone(), new.clone())]);
    assert_eq!(s.reaped_in(7).unwrap(), vec![(other.clone(), new.clone())]);
    assert_eq!(s.reaped_in(6).unwrap(), vec![]);
    s.remove_reaped(5, &third).unwrap();
    // A history record beside a live object: the object stays.
    s.put(5, &third, &object(&["c"])).unwrap();
    s.put_reaped(5, &third, &old).unwrap();
    assert_eq!(s.get(5, &third).unwrap(), Some(object(&["c"])));
    assert_eq!(s.reaped(5, &third).unwrap(), Some(old.clone()));
    s.put_reaped(5, &third, &new).unwrap();
    assert_eq!(s.reaped(5, &third).unwrap(), Some(new.clone()));
    s.remove_reaped(5, &third).unwrap();
    s.remove(5, &third).unwrap();
    s.remove_reaped(5, &k).unwrap();
    s.remove_reaped(5, &k).unwrap();
    assert_eq!(s.reaped(5, &k).unwrap(), None);
    assert_eq!(s.reaped_before(31, 10).unwrap(), vec![(7, other)]);
}

fn hint(partition: u32, key: &str, target: &str) -> Hint {
    Hint { partition, key: ObjectKey::in_default_bucket(key.to_owned()), target: NodeId::new(target) }
}

fn hints_are_stored_with_their_object_and_listed_per_key(s: &dyn Store) {
    let k = ObjectKey::in_default_bucket("k");
    s.put_hinted(3, &k, Some(&object(&["a"])), &NodeId::new("n1")).unwrap();
    assert_eq!(s.get(3, &k).unwrap(), Some(object(&["a"])));
    // A second hint for the same key, without an object; a repeated one
    // changes nothing.
    s.put_hinted(3, &k, None, &NodeId::new("n2")).unwrap();
    s.put_hinted(3, &k, None, &NodeId::new("n1")).unwrap();
    assert_eq!(s.hints_for(3, &k).unwrap(), vec![NodeId::new("n1"), NodeId::new("n2")]);
    assert_eq!(s.get(3, &k).unwrap(), Some(object(&["a"])));
    // Neighbours do not leak in: another partition, a longer key.
    s.put_hinted(4, &k, None, &NodeId::new("n3")).unwrap();
    s.put_hinted(3, &ObjectKey::in_default_bucket("kk"), None, &NodeId::new("n3")).unwrap();
    assert_eq!(s.hints_for(3, &k).unwrap().len(), 2);
    assert!(s.hints_for(3, &ObjectKey::in_default_bucket("nope")).unwrap().is_empty());
    // Hints are not objects: scans and removals of objects leave them.
    assert_eq!(scan(s, 3).len(), 1);
    s.remove(3, &k).unwrap();
    assert_eq!(s.hints_for(3, &k).unwrap().len(), 2);
    s.remove_hint(&hint(3, "k", "n1")).unwrap();
    s.remove_hint(&hint(3, "k", "absent")).unwrap();
    assert_eq!(s.hints_for(3, &k).unwrap(), vec![NodeId::new("n2")]);
}

fn hints_are_paged_in_order(s: &dyn Store) {
    let mut all = Vec::new();
    for p in [9, 2, 5] {
        for i in 0..7 {
            let h = hint(p, &format!("k{i}"), if i % 2 == 0 { "a" } else { "b" });
            s.put_hinted(h.partition, &h.key, None, &h.target).unwrap();
            all.push(h);
        }
    }
    all.sort();
    let mut seen = Vec::new();
    let mut after: Option<Hint> = None;
    loop {
        let page = s.hints(after.as_ref(), 4).unwrap();
        assert!(page.len() <= 4);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(seen, all);
    // A page resumes after a hint that is gone.
    s.remove_hint(&all[5]).unwrap();
    assert_eq!(s.hints(Some(&all[5]), 1).unwrap(), vec![all[6].clone()]);
}

macro_rules! suite {
    ($engine:ident: $($case:ident),* $(,)?) => {
        mod $engine {
            $(
                #[test]
                fn $case() {
                    let h = super::$engine();
                    super::$case(&*h.store);
                }
            )*
        }
    };
}

macro_rules! all_cases {
    ($engine:ident) => {
        suite!($engine:
            missing_key_is_none,
            put_then_get_round_trips_siblings,
            put_replaces,
            tombstones_keep_their_clock,
            remove_deletes,
            namespaces_and_partitions_do_not_collide,
            binary_keys_and_large_values,
            scan_returns_exactly_one_partition_in_key_order,
            scan_can_stop_early,
            meta_round_trips,
            put_many_writes_every_object_of_the_batch,
            stats_count_objects,
            hints_are_stored_with_their_object_and_listed_per_key,
            reap_removes_the_object_and_keeps_its_record,
            hints_are_paged_in_order,
        );
    };
}

all_cases!(memory);
all_cases!(rocks);

/// RocksDB only: what was written is there after the store is reopened.
#[test]
fn rocks_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = ObjectKey::in_default_bucket("durable");
    {
        let s = RocksStore::open(dir.path(), &RocksOptions { sync_writes: true }).unwrap();
        s.put(7, &k, &object(&["a", "b"])).unwrap();
        s.put_meta("m", b"v").unwrap();
        s.put_hinted(7, &k, None, &NodeId::new("owner")).unwrap();
    }
    let s = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    assert_eq!(s.get(7, &k).unwrap(), Some(object(&["a", "b"])));
    assert_eq!(s.get_meta("m").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.hints_for(7, &k).unwrap(), vec![NodeId::new("owner")]);
}

/// A second process (or store) on the same directory is refused clearly.
#[test]
fn rocks_refuses_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    let err = RocksStore::open(dir.path(), &RocksOptions::default()).err().expect("second open must fail");
    assert!(err.to_string().contains("cannot open RocksDB"), "{err}");
}
