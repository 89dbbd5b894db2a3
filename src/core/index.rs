//! Secondary indexes (Riak's 2i): what a query asks, and the byte encoding
//! of index entries that makes a query a range read.
//!
//! An object's index entries are the `(field, term)` pairs of its siblings'
//! metadata ([`Metadata::indexes`](super::object::Metadata)). Every replica
//! indexes the objects it holds, so a query is a coverage query: one holder
//! per partition reads its index, and the coordinator merges.
//!
//! An *entry* is the bytes `encode_term(term) ++ key`. Terms are encoded so
//! that byte order is term order (`_int` terms numerically, `_bin` terms
//! bytewise) and so that an encoded term is self-delimiting: entries then
//! sort by (term, key), which is the order Riak pages results in, and one
//! entry is also the continuation of a page that ends with it. For `$key`
//! and `$bucket` queries the term is the key itself and the entry is just
//! the key.

use bytes::Bytes;

/// The largest index term a query or a write takes, in bytes.
pub const TERM_MAX_BYTES: usize = 64 * 1024;

/// A term of one index: `_int` fields hold integers, `_bin` fields bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Term {
    Int(i128),
    Bin(Bytes),
}

impl Term {
    /// The term as Riak's JSON shows it: an integer in decimal, bytes as
    /// (lossy) UTF-8.
    pub fn to_text(&self) -> String {
        match self {
            Term::Int(n) => n.to_string(),
            Term::Bin(b) => String::from_utf8_lossy(b).into_owned(),
        }
    }
}

/// Which kind of term an index field holds, by its name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Int,
    Bin,
}

impl FieldKind {
    /// `_int` or `_bin` (with something before it); other names are not
    /// index fields.
    pub fn of(field: &str) -> Option<FieldKind> {
        if field.len() <= 4 {
            None
        } else if field.ends_with("_int") {
            Some(FieldKind::Int)
        } else if field.ends_with("_bin") {
            Some(FieldKind::Bin)
        } else {
            None
        }
    }

    /// A term of this kind from its text form (`_int`: a decimal integer,
    /// surrounding spaces allowed).
    pub fn parse(self, text: &[u8]) -> Option<Term> {
        match self {
            FieldKind::Int => std::str::from_utf8(text).ok()?.trim().parse().ok().map(Term::Int),
            FieldKind::Bin => Some(Term::Bin(Bytes::copy_from_slice(text))),
        }
    }
}

/// What a query selects in one bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexQuery {
    /// `$bucket`: every live key of the bucket.
    Bucket,
    /// `$key`: the live keys from `start` to `end`, both included.
    Keys { start: Bytes, end: Bytes },
    /// The entries of index `field` with a term from `start` to `end`, both
    /// included (an equality query has `start == end`).
    Field { field: String, start: Term, end: Term },
}

impl IndexQuery {
    /// A query from its parts as Riak's URLs and the Coverage service carry
    /// them: the field (`$bucket`, `$key`, `NAME_int`, `NAME_bin`) and the
    /// first and last term as text (ignored for `$bucket`).
    pub fn from_parts(field: &str, start: &[u8], end: &[u8]) -> Result<IndexQuery, String> {
        for term in [start, end] {
            if term.len() > TERM_MAX_BYTES {
                return Err(format!("an index term is {} bytes long, above the limit of {TERM_MAX_BYTES}", term.len()));
            }
        }
        match field {
            "$bucket" => Ok(IndexQuery::Bucket),
            "$key" => Ok(IndexQuery::Keys { start: Bytes::copy_from_slice(start), end: Bytes::copy_from_slice(end) }),
            _ => {
                let kind = FieldKind::of(field)
                    .ok_or_else(|| format!("Invalid field name \"{field}\": an index name ends in _bin or _int"))?;
                let term = |text: &[u8]| {
                    kind.parse(text).ok_or_else(|| {
                        format!(
                            "Could not parse index term {:?} of {field}: not an integer",
                            String::from_utf8_lossy(text)
                        )
                    })
                };
                Ok(IndexQuery::Field { field: field.to_owned(), start: term(start)?, end: term(end)? })
            }
        }
    }

    /// The parts [`IndexQuery::from_parts`] takes back.
    pub fn to_parts(&self) -> (String, Bytes, Bytes) {
        let text = |t: &Term| match t {
            Term::Int(n) => Bytes::from(n.to_string()),
            Term::Bin(b) => b.clone(),
        };
        match self {
            IndexQuery::Bucket => ("$bucket".into(), Bytes::new(), Bytes::new()),
            IndexQuery::Keys { start, end } => ("$key".into(), start.clone(), end.clone()),
            IndexQuery::Field { field, start, end } => (field.clone(), text(start), text(end)),
        }
    }

    /// Whether the query asks for one term (Riak then returns keys only,
    /// even when terms are asked for).
    pub fn is_equality(&self) -> bool {
        match self {
            IndexQuery::Bucket => true,
            IndexQuery::Keys { start, end } => start == end,
            IndexQuery::Field { start, end, .. } => start == end,
        }
    }

    /// The index field read, `None` for `$key` and `$bucket` (they read the
    /// objects themselves).
    pub fn field(&self) -> Option<&str> {
        match self {
            IndexQuery::Field { field, .. } => Some(field),
            _ => None,
        }
    }

    /// The term and key of one of this query's entries; `None` when the
    /// bytes are not an entry of it (a forged continuation, a bad peer).
    pub fn decode_entry(&self, entry: &[u8]) -> Option<(Term, Bytes)> {
        match self {
            IndexQuery::Bucket | IndexQuery::Keys { .. } => {
                Some((Term::Bin(Bytes::copy_from_slice(entry)), Bytes::copy_from_slice(entry)))
            }
            IndexQuery::Field { start, .. } => {
                let (term, len) = decode_term(matches!(start, Term::Int(_)), entry)?;
                Some((term, Bytes::copy_from_slice(&entry[len..])))
            }
        }
    }

    /// Whether `entry` is within the query's range.
    pub fn covers(&self, entry: &[u8]) -> bool {
        match self {
            IndexQuery::Bucket => true,
            IndexQuery::Keys { start, end } => entry >= start.as_ref() && entry <= end.as_ref(),
            IndexQuery::Field { start, end, .. } => {
                let (low, high) = (encode_term(start), encode_term(end));
                entry >= low.as_slice() && (entry.starts_with(&high) || entry < high.as_slice())
            }
        }
    }
}

/// One index query on one bucket, as a holder answers it for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexRequest {
    pub bucket_type: Bytes,
    pub bucket: Bytes,
    pub query: IndexQuery,
    /// Keeps the entries whose term matches (`$key` and `$bucket`: whose key).
    pub term_regex: Option<TermRegex>,
}

impl IndexRequest {
    /// A checked request: the query from its parts, and its `term_regex`
    /// compiled (refused on an integer field, as Riak does).
    pub fn new(
        bucket_type: Bytes,
        bucket: Bytes,
        field: &str,
        start: &[u8],
        end: &[u8],
        term_regex: Option<&str>,
    ) -> Result<IndexRequest, String> {
        let query = IndexQuery::from_parts(field, start, end)?;
        let term_regex = match term_regex {
            None => None,
            Some(_) if matches!(&query, IndexQuery::Field { start: Term::Int(_), .. }) => {
                return Err("Can not use term regular expressions on integer queries".into());
            }
            Some(pattern) => {
                Some(TermRegex::new(pattern).map_err(|e| format!("Invalid term regular expression {pattern:?}: {e}"))?)
            }
        };
        Ok(IndexRequest { bucket_type, bucket, query, term_regex })
    }

    /// Whether the entry passes the query's `term_regex` (`false` for bytes
    /// that are not an entry of the query).
    pub fn matches(&self, entry: &[u8]) -> bool {
        match &self.term_regex {
            None => true,
            Some(regex) => match &self.query {
                IndexQuery::Bucket | IndexQuery::Keys { .. } => regex.is_match(entry),
                IndexQuery::Field { start, .. } => match decode_term(matches!(start, Term::Int(_)), entry) {
                    Some((Term::Bin(term), _)) => regex.is_match(&term),
                    Some((Term::Int(n), _)) => regex.is_match(n.to_string().as_bytes()),
                    None => false,
                },
            },
        }
    }
}

/// A query's `term_regex`: keeps the entries whose term it matches
/// (searching, not anchored, as Riak's `re:run`). The `regex` crate runs in
/// time linear in the term, so a hostile pattern cannot stall a holder;
/// its size is bounded too.
#[derive(Debug, Clone)]
pub struct TermRegex(regex::bytes::Regex);

/// The most memory a compiled `term_regex` may take.
const REGEX_MAX_BYTES: usize = 1 << 20;

impl TermRegex {
    pub fn new(pattern: &str) -> Result<TermRegex, String> {
        regex::bytes::RegexBuilder::new(pattern)
            .size_limit(REGEX_MAX_BYTES)
            .dfa_size_limit(REGEX_MAX_BYTES)
            .build()
            .map(TermRegex)
            .map_err(|e| e.to_string())
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn is_match(&self, term: &[u8]) -> bool {
        self.0.is_match(term)
    }
}

impl PartialEq for TermRegex {
    fn eq(&self, other: &TermRegex) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for TermRegex {}

/// The bytes of a term: order-preserving and self-delimiting. An integer is
/// 16 big-endian bytes with the sign bit flipped (so negative numbers sort
/// first); bytes are escaped (`00` becomes `00 FF`) and end with `00 00`, so
/// a term sorts before every longer term it is a prefix of.
pub fn encode_term(term: &Term) -> Vec<u8> {
    match term {
        Term::Int(n) => ((*n as u128) ^ (1 << 127)).to_be_bytes().to_vec(),
        Term::Bin(b) => {
            let mut out = Vec::with_capacity(b.len() + 2);
            for &byte in b.iter() {
                out.push(byte);
                if byte == 0 {
                    out.push(0xFF);
                }
            }
            out.extend_from_slice(&[0, 0]);
            out
        }
    }
}

/// The term at the start of `raw` and how many bytes it took.
pub fn decode_term(int: bool, raw: &[u8]) -> Option<(Term, usize)> {
    if int {
        let bytes: [u8; 16] = raw.get(..16)?.try_into().ok()?;
        let n = (u128::from_be_bytes(bytes) ^ (1 << 127)) as i128;
        return Some((Term::Int(n), 16));
    }
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        match (raw.get(i)?, raw.get(i + 1)) {
            (0, Some(0)) => return Some((Term::Bin(out.into()), i + 2)),
            (0, Some(0xFF)) => {
                out.push(0);
                i += 2;
            }
            (0, _) => return None,
            (&byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
}

/// One entry: the encoded term followed by the key.
pub fn entry(term: &Term, key: &[u8]) -> Vec<u8> {
    let mut out = encode_term(term);
    out.extend_from_slice(key);
    out
}

/// The index entries of one stored object: `(field, entry)` for every
/// well-formed `(field, term)` of every sibling, each once. Malformed pairs
/// (a peer's or an old record's) are skipped: they cannot be queried.
pub fn object_entries(object: &super::object::Object, key: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = object
        .siblings()
        .iter()
        .flat_map(|s| &s.content.meta.indexes)
        .filter_map(|(field, text)| {
            let term = FieldKind::of(field)?.parse(text.as_bytes())?;
            Some((field.clone(), entry(&term, key)))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn bin(b: &[u8]) -> Term {
        Term::Bin(Bytes::copy_from_slice(b))
    }

    proptest! {
        #[test]
        fn entries_sort_by_term_then_key(
            a in any::<i128>(), b in any::<i128>(),
            x in proptest::collection::vec(any::<u8>(), 0..6),
            y in proptest::collection::vec(any::<u8>(), 0..6),
            ka in proptest::collection::vec(any::<u8>(), 0..4),
            kb in proptest::collection::vec(any::<u8>(), 0..4),
        ) {
            let ints = (entry(&Term::Int(a), &ka), entry(&Term::Int(b), &kb));
            prop_assert_eq!(ints.0.cmp(&ints.1), (a, &ka).cmp(&(b, &kb)));
            let bins = (entry(&bin(&x), &ka), entry(&bin(&y), &kb));
            prop_assert_eq!(bins.0.cmp(&bins.1), (&x, &ka).cmp(&(&y, &kb)));
        }

        #[test]
        fn entries_decode_to_their_term_and_key(
            n in any::<i128>(),
            x in proptest::collection::vec(any::<u8>(), 0..8),
            k in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let q = |t: Term| IndexQuery::Field { field: "f_bin".into(), start: t.clone(), end: t };
            let int = q(Term::Int(0));
            prop_assert_eq!(int.decode_entry(&entry(&Term::Int(n), &k)), Some((Term::Int(n), Bytes::from(k.clone()))));
            let b = q(bin(b""));
            prop_assert_eq!(b.decode_entry(&entry(&bin(&x), &k)), Some((bin(&x), Bytes::from(k))));
        }

        #[test]
        fn garbage_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = decode_term(false, &raw);
            let _ = decode_term(true, &raw);
        }
    }

    #[test]
    fn a_range_covers_its_ends_and_nothing_outside() {
        let q = IndexQuery::Field { field: "f_bin".into(), start: bin(b"b"), end: bin(b"c") };
        assert!(q.covers(&entry(&bin(b"b"), b"k")));
        assert!(q.covers(&entry(&bin(b"bzz"), b"")));
        assert!(q.covers(&entry(&bin(b"c"), b"\xff\xff")));
        assert!(!q.covers(&entry(&bin(b"c\x00"), b"k")));
        assert!(!q.covers(&entry(&bin(b"a"), b"k")));
        assert!(!q.covers(&entry(&bin(b"ca"), b"k")));
        let q = IndexQuery::Field { field: "f_int".into(), start: Term::Int(-5), end: Term::Int(0) };
        assert!(q.covers(&entry(&Term::Int(-5), b"k")) && q.covers(&entry(&Term::Int(0), b"k")));
        assert!(!q.covers(&entry(&Term::Int(1), b"")) && !q.covers(&entry(&Term::Int(-6), b"zz")));
    }

    #[test]
    fn queries_round_trip_through_their_parts_and_refuse_bad_ones() {
        for q in [
            IndexQuery::Bucket,
            IndexQuery::Keys { start: "a".into(), end: "b".into() },
            IndexQuery::Field { field: "n_int".into(), start: Term::Int(-3), end: Term::Int(i128::MAX) },
            IndexQuery::Field { field: "n_bin".into(), start: bin(b"\x00"), end: bin(b"z") },
        ] {
            let (f, s, e) = q.to_parts();
            assert_eq!(IndexQuery::from_parts(&f, &s, &e), Ok(q));
        }
        assert!(IndexQuery::from_parts("n", b"1", b"2").is_err());
        assert!(IndexQuery::from_parts("n_int", b"1", b"two").is_err());
        assert!(IndexQuery::from_parts("n_bin", &vec![b'x'; TERM_MAX_BYTES + 1], b"").is_err());
        let new = |field, regex| IndexRequest::new("t".into(), "b".into(), field, b"1", b"2", Some(regex));
        assert!(new("n_int", "1").unwrap_err().contains("integer"));
        assert!(new("n_bin", "(").unwrap_err().contains("Invalid term regular expression"));
        assert!(new("n_bin", "a{1000}{1000}{1000}").is_err(), "too large to compile");
        assert!(new("$key", "^k").is_ok());
    }

    #[test]
    fn field_kinds_come_from_the_suffix() {
        assert_eq!(FieldKind::of("age_int"), Some(FieldKind::Int));
        assert_eq!(FieldKind::of("name_bin"), Some(FieldKind::Bin));
        assert_eq!(FieldKind::of("_int"), None);
        assert_eq!(FieldKind::of("age"), None);
        assert_eq!(FieldKind::Int.parse(b" 007 "), Some(Term::Int(7)));
        assert_eq!(FieldKind::Int.parse(b"x"), None);
    }
}
