//! One conformance suite, run against every storage engine.

use std::ops::ControlFlow;

use bytes::Bytes;
use tempfile::TempDir;
use vinzclortho::core::index::{IndexQuery, IndexRequest, Term, TermRegex};
use vinzclortho::core::key::{NodeId, ObjectKey};
use vinzclortho::core::object::{Content, Link, Metadata, Mutation, Object};
use vinzclortho::core::vclock::VersionVector;
use vinzclortho::storage::{Hint, MemoryStore, Reaped, RocksOptions, RocksStore, StorageError, Store};

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

/// A clean shutdown's flush succeeds and changes nothing that is read.
fn flush_keeps_what_was_written(s: &dyn Store) {
    let k = ObjectKey::in_default_bucket("flushed");
    s.put(2, &k, &object(&["a"])).unwrap();
    s.flush().unwrap();
    assert_eq!(s.get(2, &k).unwrap(), Some(object(&["a"])));
    s.put(2, &k, &object(&["b"])).unwrap();
    assert_eq!(s.get(2, &k).unwrap(), Some(object(&["b"])), "writes go on after a flush");
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

fn tombstone() -> Object {
    let mut o = object(&["a"]);
    let ctx = o.clock().clone();
    o.update(42, &ctx, Mutation::Delete).unwrap();
    o
}

/// A checkpoint (`/admin/backup`) is a data directory holding everything
/// the store held when it was taken, and nothing written after; an engine
/// without a disk refuses it clearly and writes nothing.
fn checkpoint_holds_everything_as_of_then_or_is_refused(s: &dyn Store) {
    let scratch = tempfile::tempdir().unwrap();
    let target = scratch.path().join("backup");
    let k = ObjectKey::in_default_bucket("k");
    let person = ObjectKey::new("default", "people", "ann");
    let gone = ObjectKey::in_default_bucket("gone");
    let reaped = Reaped { clock: VersionVector::from_entries([(42, 3)]), reaped_at_ms: 10 };
    s.put(3, &k, &object(&["a", "b"])).unwrap();
    s.put(1, &person, &indexed(&[("age_int", "42")])).unwrap();
    s.put_hinted(3, &ObjectKey::in_default_bucket("h"), Some(&object(&["h"])), &NodeId::new("n1")).unwrap();
    s.put(5, &gone, &object(&["x"])).unwrap();
    s.reap(5, &gone, &reaped).unwrap();
    s.put_meta("actor", b"node id").unwrap();
    let written = match s.checkpoint(&target) {
        Err(StorageError::Unsupported(why)) => {
            assert_eq!(s.engine(), "memory", "only the memory engine has no checkpoint");
            assert!(why.contains("nothing to back up"), "{why}");
            assert!(!target.exists(), "a refused checkpoint writes nothing");
            return;
        }
        other => other.unwrap(),
    };
    assert!(written.files > 0 && written.bytes > 0, "{written:?}");
    // Written after the checkpoint: not in it.
    s.put(3, &k, &object(&["c"])).unwrap();
    s.put(3, &ObjectKey::in_default_bucket("later"), &object(&["l"])).unwrap();
    s.put_meta("actor", b"changed").unwrap();

    let backup = RocksStore::open(&target, &RocksOptions::default()).unwrap();
    assert_eq!(backup.get(3, &k).unwrap(), Some(object(&["a", "b"])));
    assert_eq!(backup.get(3, &ObjectKey::in_default_bucket("later")).unwrap(), None);
    assert_eq!(scan(&backup, 3).len(), 2, "k and the hinted copy");
    let q = field("age_int", int(0), int(100));
    assert_eq!(keys_of(&all_entries(&backup, 1, "people", &q, None, 10)), vec![&b"ann"[..]]);
    assert_eq!(backup.hints(None, 10).unwrap(), vec![hint(3, "h", "n1")]);
    assert_eq!(backup.get(5, &gone).unwrap(), None);
    assert_eq!(backup.reaped(5, &gone).unwrap(), Some(reaped));
    assert_eq!(backup.get_meta("actor").unwrap(), Some(b"node id".to_vec()));
    // The original is untouched by it, and a second checkpoint needs a
    // new directory.
    assert_eq!(s.get(3, &k).unwrap(), Some(object(&["c"])));
    assert!(matches!(s.checkpoint(&target), Err(StorageError::BadTarget(_))));
}

/// Every key of a bucket, page by page, checking each page's bound.
fn all_keys(s: &dyn Store, partition: u32, bucket_type: &[u8], bucket: &[u8], limit: usize) -> Vec<Bytes> {
    let (mut keys, mut after): (Vec<Bytes>, Option<Bytes>) = (Vec::new(), None);
    for _ in 0..10_000 {
        let page = s.list_keys(partition, bucket_type, bucket, after.as_deref(), limit).unwrap();
        assert!(page.keys.len() <= limit.max(1), "a page lists at most its limit");
        keys.extend(page.keys);
        match page.resume {
            Some(resume) => after = Some(resume),
            None => return keys,
        }
    }
    panic!("listing did not end");
}

fn all_buckets(s: &dyn Store, partition: u32, bucket_type: &[u8], limit: usize) -> Vec<Bytes> {
    let (mut buckets, mut from) = (Vec::new(), None);
    for _ in 0..10_000 {
        let page = s.list_buckets(partition, bucket_type, from.as_ref(), limit).unwrap();
        buckets.extend(page.buckets);
        match page.resume {
            Some(resume) => from = Some(resume),
            None => return buckets,
        }
    }
    panic!("listing did not end");
}

fn keys_are_listed_per_bucket_in_pages_without_tombstones(s: &dyn Store) {
    let live: Vec<Bytes> = (0..25).map(|i| Bytes::from(format!("k{i:02}"))).collect();
    for k in &live {
        s.put(5, &ObjectKey::new("t", "b", k.clone()), &object(&["v"])).unwrap();
    }
    s.put(5, &ObjectKey::new("t", "b", "k10x"), &tombstone()).unwrap();
    // Neighbours that are not the bucket: other buckets (one a longer name),
    // another type, other partitions.
    for (t, b, p) in [("t", "bb", 5), ("t", "a", 5), ("tt", "b", 5), ("t", "b", 4), ("t", "b", 6)] {
        s.put(p, &ObjectKey::new(t, b, "k05"), &object(&["v"])).unwrap();
    }
    // Binary bucket names and keys, an empty key.
    s.put(5, &ObjectKey::new("t", &b"\xff\x00"[..], &b"\x00\xff"[..]), &object(&["v"])).unwrap();
    s.put(5, &ObjectKey::new("t", &b"\xff\x00"[..], ""), &object(&["v"])).unwrap();
    for limit in [1, 3, 7, 26, 1000] {
        assert_eq!(all_keys(s, 5, b"t", b"b", limit), live, "limit {limit}");
    }
    let binary = all_keys(s, 5, b"t", b"\xff\x00", 1);
    assert_eq!(binary, vec![Bytes::new(), Bytes::from_static(b"\x00\xff")]);
    assert!(all_keys(s, 5, b"t", b"none", 10).is_empty());
    // One page, resumed after a key.
    let page = s.list_keys(5, b"t", b"b", Some(b"k20"), 100).unwrap();
    assert_eq!(page.keys, live[21..].to_vec());
    assert_eq!(page.resume, None);
    // A page that met only tombstones still moves on.
    let page = s.list_keys(5, b"t", b"b", Some(b"k10"), 1).unwrap();
    assert!(page.keys.is_empty());
    assert_eq!(page.resume.as_deref(), Some(&b"k10x"[..]));
}

fn buckets_are_listed_once_per_partition_skipping_tombstone_only_buckets(s: &dyn Store) {
    for i in 0..30 {
        s.put(2, &ObjectKey::new("t", "many", format!("k{i}")), &object(&["v"])).unwrap();
    }
    s.put(2, &ObjectKey::new("t", "a", "k"), &object(&["v"])).unwrap();
    for i in 0..5 {
        s.put(2, &ObjectKey::new("t", "dead", format!("k{i}")), &tombstone()).unwrap();
    }
    // Live after tombstones: still listed.
    s.put(2, &ObjectKey::new("t", "mixed", "a"), &tombstone()).unwrap();
    s.put(2, &ObjectKey::new("t", "mixed", "b"), &object(&["v"])).unwrap();
    s.put(2, &ObjectKey::new("t", "manyx", "k"), &object(&["v"])).unwrap();
    s.put(2, &ObjectKey::new("other", "x", "k"), &object(&["v"])).unwrap();
    s.put(3, &ObjectKey::new("t", "elsewhere", "k"), &object(&["v"])).unwrap();
    let want: Vec<Bytes> = ["a", "many", "manyx", "mixed"].into_iter().map(Bytes::from).collect();
    for limit in [1, 2, 3, 100] {
        assert_eq!(all_buckets(s, 2, b"t", limit), want, "limit {limit}");
    }
    // A bucket holding many keys costs one record: one page of 4 lists all.
    let page = s.list_buckets(2, b"t", None, 100).unwrap();
    assert_eq!((page.buckets, page.resume), (want, None));
    assert_eq!(all_buckets(s, 2, b"other", 1), vec![Bytes::from("x")]);
    assert!(all_buckets(s, 2, b"none", 1).is_empty());
    assert!(all_buckets(s, 1, b"t", 1).is_empty());
}

/// A live object whose one value carries these index entries.
fn indexed(entries: &[(&str, &str)]) -> Object {
    let mut o = Object::new();
    let content = Content {
        value: Bytes::from_static(b"v"),
        content_type: "text/plain".into(),
        last_modified_ms: 1,
        meta: Metadata {
            indexes: entries.iter().map(|(f, t)| (f.to_string(), t.to_string())).collect(),
            ..Metadata::default()
        },
    };
    o.update(42, &VersionVector::new(), Mutation::Put(content)).unwrap();
    o
}

fn field(name: &str, start: Term, end: Term) -> IndexQuery {
    IndexQuery::Field { field: name.into(), start, end }
}

fn int(n: i128) -> Term {
    Term::Int(n)
}

fn bin(s: &str) -> Term {
    Term::Bin(Bytes::copy_from_slice(s.as_bytes()))
}

/// Every (term, key) a query finds in one partition, page by page, with
/// each page's bound checked.
fn all_entries(
    s: &dyn Store,
    partition: u32,
    bucket: &str,
    query: &IndexQuery,
    regex: Option<&str>,
    limit: usize,
) -> Vec<(Term, Bytes)> {
    let request = IndexRequest {
        bucket_type: Bytes::from_static(b"default"),
        bucket: Bytes::copy_from_slice(bucket.as_bytes()),
        query: query.clone(),
        term_regex: regex.map(|r| TermRegex::new(r).unwrap()),
    };
    let mut out = Vec::new();
    let mut after: Option<Bytes> = None;
    loop {
        let page = s.index_page(partition, &request, after.as_deref(), limit).unwrap();
        assert!(page.entries.len() <= limit, "a page examines at most {limit} rows");
        assert!(page.entries.windows(2).all(|w| w[0] < w[1]), "a page is ascending");
        out.extend(page.entries.iter().map(|e| query.decode_entry(e).expect("an entry of the query")));
        match page.resume {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

fn keys_of(found: &[(Term, Bytes)]) -> Vec<&[u8]> {
    found.iter().map(|(_, k)| k.as_ref()).collect()
}

fn index_queries_find_what_the_objects_hold_now(s: &dyn Store) {
    let k = |key: &str| ObjectKey::new("default", "people", key.to_owned());
    s.put(1, &k("ann"), &indexed(&[("age_int", "42"), ("name_bin", "ann"), ("tag_bin", "x")])).unwrap();
    s.put(1, &k("bob"), &indexed(&[("age_int", "-7"), ("name_bin", "bob")])).unwrap();
    s.put(1, &k("cy"), &indexed(&[("age_int", "42"), ("name_bin", "cy\u{0}z")])).unwrap();
    s.put(1, &k("dead"), &tombstone()).unwrap();
    // The same bucket name in another partition, another bucket here.
    s.put(2, &k("eve"), &indexed(&[("age_int", "42")])).unwrap();
    s.put(1, &ObjectKey::new("default", "other", "fay"), &indexed(&[("age_int", "42")])).unwrap();
    for limit in [1, 2, 100] {
        let q = field("age_int", int(42), int(42));
        assert_eq!(all_entries(s, 1, "people", &q, None, limit), vec![(int(42), "ann".into()), (int(42), "cy".into())]);
        let q = field("age_int", int(-100), int(100));
        let found = all_entries(s, 1, "people", &q, None, limit);
        assert_eq!(keys_of(&found), vec![&b"bob"[..], b"ann", b"cy"], "numeric order, then key");
        let q = field("name_bin", bin("b"), bin("cy"));
        assert_eq!(keys_of(&all_entries(s, 1, "people", &q, None, limit)), vec![&b"bob"[..]], "cy\\0z sorts after cy");
        let q = field("name_bin", bin("a"), bin("d"));
        let found = all_entries(s, 1, "people", &q, Some("^[ab]"), limit);
        assert_eq!(found, vec![(bin("ann"), "ann".into()), (bin("bob"), "bob".into())]);
        let found = all_entries(s, 1, "people", &IndexQuery::Bucket, None, limit);
        assert_eq!(keys_of(&found), vec![&b"ann"[..], b"bob", b"cy"], "tombstones are not listed");
        let q = IndexQuery::Keys { start: "b".into(), end: "cy".into() };
        assert_eq!(keys_of(&all_entries(s, 1, "people", &q, None, limit)), vec![&b"bob"[..], b"cy"]);
    }
    // A write replaces the object's entries; a delete and a removal drop them.
    s.put(1, &k("ann"), &indexed(&[("age_int", "43")])).unwrap();
    let mut gone = s.get(1, &k("bob")).unwrap().unwrap();
    let ctx = gone.clock().clone();
    gone.update(42, &ctx, Mutation::Delete).unwrap();
    s.put(1, &k("bob"), &gone).unwrap();
    s.remove(1, &k("cy")).unwrap();
    let q = field("age_int", int(-100), int(100));
    assert_eq!(all_entries(s, 1, "people", &q, None, 10), vec![(int(43), "ann".into())]);
    assert!(all_entries(s, 1, "people", &field("name_bin", bin(""), bin("zzz")), None, 10).is_empty());
    // A batch and a hinted write index their objects; a reap drops them.
    s.put_many(3, &[(k("g"), indexed(&[("n_int", "1")])), (k("h"), indexed(&[("n_int", "2")]))]).unwrap();
    s.put_hinted(3, &k("i"), Some(&indexed(&[("n_int", "3")])), &NodeId::new("owner")).unwrap();
    let q = field("n_int", int(0), int(9));
    assert_eq!(keys_of(&all_entries(s, 3, "people", &q, None, 2)), vec![&b"g"[..], b"h", b"i"]);
    s.put_many(3, &[(k("g"), indexed(&[])), (k("h"), indexed(&[("n_int", "5")]))]).unwrap();
    s.reap(3, &k("i"), &Reaped { clock: VersionVector::new(), reaped_at_ms: 1 }).unwrap();
    assert_eq!(all_entries(s, 3, "people", &q, None, 2), vec![(int(5), "h".into())]);
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
            keys_are_listed_per_bucket_in_pages_without_tombstones,
            buckets_are_listed_once_per_partition_skipping_tombstone_only_buckets,
            index_queries_find_what_the_objects_hold_now,
            checkpoint_holds_everything_as_of_then_or_is_refused,
            flush_keeps_what_was_written,
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
        let s = RocksStore::open(dir.path(), &RocksOptions { sync_writes: true, ..RocksOptions::default() }).unwrap();
        s.put(7, &k, &object(&["a", "b"])).unwrap();
        s.put_meta("m", b"v").unwrap();
        s.put_hinted(7, &k, None, &NodeId::new("owner")).unwrap();
    }
    let s = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    assert_eq!(s.get(7, &k).unwrap(), Some(object(&["a", "b"])));
    assert_eq!(s.get_meta("m").unwrap(), Some(b"v".to_vec()));
    assert_eq!(s.hints_for(7, &k).unwrap(), vec![NodeId::new("owner")]);
}

/// RocksDB only: `--rocksdb-options` reaches RocksDB (its OPTIONS file, which
/// it writes at every open, records what it runs with), over the store's own
/// defaults (LZ4 on objects stays), for the database and every family.
#[test]
fn rocks_applies_tuning_over_its_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let k = ObjectKey::in_default_bucket("tuned");
    let tuning = "compaction_style=kCompactionStyleUniversal;max_background_jobs=3;\
                  block_based_table_factory={filter_policy=bloomfilter:10:false}";
    {
        let s = RocksStore::open(dir.path(), &RocksOptions { tuning: Some(tuning.into()), ..RocksOptions::default() })
            .unwrap();
        s.put(7, &k, &object(&["a"])).unwrap();
        let memory = s.stats().unwrap().memory;
        assert!(memory.memtables > 0, "{memory:?}");
        s.flush().unwrap();
        assert_eq!(s.get(7, &k).unwrap(), Some(object(&["a"])));
        // The flushed file's index and filter blocks, and the block read,
        // are held by its reader or cached (which, RocksDB's version decides).
        let memory = s.stats().unwrap().memory;
        assert!(memory.table_readers + memory.block_cache > 0, "{memory:?}");
    }
    let options = latest_options_file(dir.path());
    assert!(options.contains("max_background_jobs=3"), "{options}");
    for family in ["objects", "meta", "hints", "reaped", "index"] {
        let section = family_section(&options, family);
        assert!(section.contains("compaction_style=kCompactionStyleUniversal"), "{family}: {section}");
        assert!(section.to_lowercase().contains("bloom"), "{family}: {section}");
    }
    assert!(family_section(&options, "objects").contains("compression=kLZ4Compression"));

    // Without tuning the defaults come back, and the data with them.
    let s = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    assert_eq!(s.get(7, &k).unwrap(), Some(object(&["a"])));
    drop(s);
    let options = latest_options_file(dir.path());
    assert!(options.contains("max_background_jobs=2"), "{options}");
    assert!(family_section(&options, "objects").contains("compaction_style=kCompactionStyleLevel"));
}

/// RocksDB only: an option RocksDB does not know, a bad value, or an option
/// that would lose or reorder acknowledged writes refuses the open with a
/// message naming the setting, and creates nothing.
#[test]
fn rocks_refuses_bad_tuning() {
    for bad in [
        "no_such_option=1",
        "compaction_style=kSideways",
        "write_buffer_size=lots",
        // Valid to RocksDB, but they would lose or reorder acknowledged writes.
        "manual_wal_flush=true",
        "block_based_table_factory={block_size=8K};unordered_write=true",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let err = RocksStore::open(&path, &RocksOptions { tuning: Some(bad.into()), ..RocksOptions::default() })
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"))
            .to_string();
        assert!(err.contains("--rocksdb-options"), "{bad}: {err}");
        assert!(!path.join("CURRENT").exists(), "{bad}: a database was created");
    }
}

fn latest_options_file(dir: &std::path::Path) -> String {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("OPTIONS-") && !n.ends_with(".dbtmp"))
        .collect();
    // OPTIONS-<file number>: the newest has the largest number.
    files.sort_by_key(|n| n["OPTIONS-".len()..].parse::<u64>().unwrap());
    std::fs::read_to_string(dir.join(files.last().expect("RocksDB writes an OPTIONS file"))).unwrap()
}

/// The `[CFOptions "family"]` section of an OPTIONS file.
fn family_section<'a>(options: &'a str, family: &str) -> &'a str {
    let header = format!("[CFOptions \"{family}\"]");
    let start = options.find(&header).unwrap_or_else(|| panic!("no {header} in {options}"));
    let rest = &options[start + header.len()..];
    &rest[..rest.find("\n[CFOptions").unwrap_or(rest.len())]
}

/// RocksDB only: index rows survive a reopen, and a store reopened with
/// rows still replaces them when a write drops an object's entries (its
/// "indexes in use" flag comes back from the data, not from memory).
#[test]
fn rocks_index_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let k = ObjectKey::new("default", "people", "ann");
    let q = field("age_int", int(0), int(100));
    {
        let s = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
        s.put(1, &k, &indexed(&[("age_int", "42")])).unwrap();
    }
    let s = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    assert_eq!(keys_of(&all_entries(&s, 1, "people", &q, None, 10)), vec![&b"ann"[..]]);
    s.put(1, &k, &indexed(&[])).unwrap();
    assert!(all_entries(&s, 1, "people", &q, None, 10).is_empty());
}

/// A second process (or store) on the same directory is refused clearly.
#[test]
fn rocks_refuses_a_directory_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let _first = RocksStore::open(dir.path(), &RocksOptions::default()).unwrap();
    let err = RocksStore::open(dir.path(), &RocksOptions::default()).err().expect("second open must fail");
    assert!(err.to_string().contains("cannot open RocksDB"), "{err}");
}

/// RocksDB only (the memory engine refuses every checkpoint): a target the
/// operator got wrong is refused with why, and nothing is written.
#[test]
fn rocks_checkpoint_refuses_bad_targets() {
    let data = tempfile::tempdir().unwrap();
    let s = RocksStore::open(data.path(), &RocksOptions::default()).unwrap();
    s.put(0, &ObjectKey::in_default_bucket("k"), &object(&["a"])).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let existing = scratch.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    let file = scratch.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let leftover = scratch.path().join("interrupted");
    std::fs::create_dir(scratch.path().join("interrupted.tmp")).unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        ("relative/backup".into(), "is not absolute"),
        (existing.clone(), "exists already"),
        (file.clone(), "exists already"),
        (scratch.path().join("missing/backup"), "cannot write"),
        // A parent that is a file: what root meets where a user would get
        // "permission denied" (tests run as root, which may write anywhere).
        (file.join("backup"), "cannot write"),
        (data.path().join("backup"), "inside the data directory"),
        (leftover.clone(), "interrupted backup"),
    ];
    for (target, why) in cases {
        match s.checkpoint(&target) {
            Err(StorageError::BadTarget(message)) => assert!(message.contains(why), "{target:?}: {message}"),
            other => panic!("{target:?}: expected a refusal ({why}), got {other:?}"),
        }
    }
    assert!(std::fs::read_dir(&existing).unwrap().next().is_none(), "an existing directory is left alone");
    assert!(!leftover.exists() && !data.path().join("backup").exists());
    assert!(!std::path::Path::new("relative").exists());
    // And a good one next to them works.
    assert!(s.checkpoint(&scratch.path().join("good")).is_ok());
}

/// Two backups into the same new directory at once (two operators, or a
/// retried request): one is written, the other refused as a bad target (a
/// 400 naming the path), never an I/O failure (a 500) from RocksDB finding
/// the other's half-made directory.
#[test]
fn rocks_concurrent_checkpoints_into_one_directory_write_one_and_refuse_the_other() {
    let data = tempfile::tempdir().unwrap();
    let s = RocksStore::open(data.path(), &RocksOptions::default()).unwrap();
    s.put(0, &ObjectKey::in_default_bucket("k"), &object(&["a"])).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    // The race is short: many tries make losing it certain on the old code.
    for attempt in 0..20 {
        let target = scratch.path().join(format!("backup{attempt}"));
        let barrier = std::sync::Barrier::new(2);
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        s.checkpoint(&target)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let written = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(written, 1, "attempt {attempt}: {results:?}");
        for result in &results {
            if let Err(e) = result {
                assert!(matches!(e, StorageError::BadTarget(m) if m.contains("exists")), "attempt {attempt}: {e:?}");
            }
        }
    }
}

/// A wrapper that keeps the trait's default listing (through
/// `scan_partition`), as test wrappers such as the simulator's store do.
struct Scanned(MemoryStore);

impl Store for Scanned {
    fn engine(&self) -> &'static str {
        "scanned"
    }
    fn get(&self, p: u32, k: &ObjectKey) -> Result<Option<Object>, vinzclortho::storage::StorageError> {
        self.0.get(p, k)
    }
    fn put(&self, p: u32, k: &ObjectKey, o: &Object) -> Result<(), vinzclortho::storage::StorageError> {
        self.0.put(p, k, o)
    }
    fn put_many(&self, p: u32, o: &[(ObjectKey, Object)]) -> Result<(), vinzclortho::storage::StorageError> {
        self.0.put_many(p, o)
    }
    fn remove(&self, p: u32, k: &ObjectKey) -> Result<(), vinzclortho::storage::StorageError> {
        self.0.remove(p, k)
    }
    fn put_hinted(
        &self,
        p: u32,
        k: &ObjectKey,
        o: Option<&Object>,
        target: &NodeId,
    ) -> Result<(), vinzclortho::storage::StorageError> {
        self.0.put_hinted(p, k, o, target)
    }
    fn reap(&self, p: u32, k: &ObjectKey, r: &Reaped) -> Result<(), vinzclortho::storage::StorageError> {
        self.0.reap(p, k, r)
    }
    fn scan_partition(
        &self,
        p: u32,
    ) -> Result<
        Box<dyn Iterator<Item = Result<vinzclortho::storage::Entry, vinzclortho::storage::StorageError>> + '_>,
        vinzclortho::storage::StorageError,
    > {
        self.0.scan_partition(p)
    }
    fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, vinzclortho::storage::StorageError> {
        self.0.get_meta(name)
    }
    fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), vinzclortho::storage::StorageError> {
        self.0.put_meta(name, value)
    }
    fn stats(&self) -> Result<vinzclortho::storage::StoreStats, vinzclortho::storage::StorageError> {
        self.0.stats()
    }
}

#[test]
fn the_default_listing_of_a_wrapper_agrees_with_the_engines() {
    keys_are_listed_per_bucket_in_pages_without_tombstones(&Scanned(MemoryStore::new()));
    buckets_are_listed_once_per_partition_skipping_tombstone_only_buckets(&Scanned(MemoryStore::new()));
    index_queries_find_what_the_objects_hold_now(&Scanned(MemoryStore::new()));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..proptest::prelude::ProptestConfig::default() })]

    /// Listing agrees with a model of the store (which keys and buckets
    /// hold a live object), on both engines, whatever the page size.
    #[test]
    fn listings_agree_with_a_model(
        records in proptest::collection::vec(
            (0u8..3, 0u8..4, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4), proptest::prelude::any::<bool>(), 0u32..3),
            0..60,
        ),
        limit in 1usize..8,
    ) {
        use std::collections::{BTreeMap, BTreeSet};
        let types = [&b"t"[..], b"tt", b"\xff"];
        let buckets = [&b"b"[..], b"bb", b"", b"b\x00"];
        // Last write wins, as in the store.
        let mut model: BTreeMap<(u32, usize, usize, Vec<u8>), bool> = BTreeMap::new();
        for h in [memory(), rocks()] {
            let s = &*h.store;
            model.clear();
            for (t, b, key, live, p) in &records {
                let k = ObjectKey::new(types[*t as usize], buckets[*b as usize], key.clone());
                s.put(*p, &k, &if *live { object(&["v"]) } else { tombstone() }).unwrap();
                model.insert((*p, *t as usize, *b as usize, key.clone()), *live);
            }
            for p in 0..3 {
                for (t, bucket_type) in types.iter().enumerate() {
                    let want: BTreeSet<Bytes> = model
                        .iter()
                        .filter(|((mp, mt, _, _), live)| *mp == p && *mt == t && **live)
                        .map(|((_, _, b, _), _)| Bytes::copy_from_slice(buckets[*b]))
                        .collect();
                    let got = all_buckets(s, p, bucket_type, limit);
                    proptest::prop_assert_eq!(got.iter().cloned().collect::<BTreeSet<_>>(), want);
                    proptest::prop_assert_eq!(got.len(), got.iter().collect::<BTreeSet<_>>().len(), "each bucket once");
                    for (b, bucket) in buckets.iter().enumerate() {
                        let want: Vec<Bytes> = model
                            .iter()
                            .filter(|((mp, mt, mb, _), live)| *mp == p && *mt == t && *mb == b && **live)
                            .map(|((_, _, _, k), _)| Bytes::copy_from_slice(k))
                            .collect();
                        proptest::prop_assert_eq!(all_keys(s, p, bucket_type, bucket, limit), want);
                    }
                }
            }
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 48, ..proptest::prelude::ProptestConfig::default() })]

    /// After any sequence of writes, deletes and removals, both engines'
    /// index queries find exactly what the objects hold (the trait's
    /// default, computed from the objects alone), whatever the page size.
    #[test]
    fn index_queries_agree_with_the_objects(
        ops in proptest::collection::vec(
            (0u8..6, 0u8..4, proptest::collection::vec((0u8..2, -3i128..4), 0..4)),
            0..40,
        ),
        limit in 1usize..6,
        low in -3i128..4,
        span in 0i128..5,
    ) {
        let names = ["a_int", "b_int"];
        let reference = Scanned(MemoryStore::new());
        let engines = [memory(), rocks()];
        let stores: Vec<&dyn Store> = engines.iter().map(|h| &*h.store).chain([&reference as &dyn Store]).collect();
        for (key, what, entries) in &ops {
            let k = ObjectKey::new("default", "b", vec![*key]);
            let text: Vec<(String, String)> =
                entries.iter().map(|(f, n)| (names[*f as usize].to_string(), n.to_string())).collect();
            let pairs: Vec<(&str, &str)> = text.iter().map(|(f, n)| (f.as_str(), n.as_str())).collect();
            for s in &stores {
                match what {
                    0 => s.remove(0, &k).unwrap(),
                    1 => s.put(0, &k, &tombstone()).unwrap(),
                    2 => s.put_many(0, &[(k.clone(), indexed(&pairs))]).unwrap(),
                    _ => s.put(0, &k, &indexed(&pairs)).unwrap(),
                }
            }
        }
        for name in names {
            let q = field(name, int(low), int(low + span));
            let want = all_entries(&reference, 0, "b", &q, None, 1000);
            for s in &stores[..2] {
                proptest::prop_assert_eq!(&all_entries(*s, 0, "b", &q, None, limit), &want, "{}", s.engine());
            }
        }
    }
}
