//! The causal context token clients carry between a read and a write
//! (`X-VinzClortho-Context`, or Riak's `X-Riak-Vclock`): an opaque base64
//! string (URL-safe for ours, standard with padding for Riak's, which its
//! clients decode and re-encode), sealed by the cluster and bound to one key.
//!
//! Why sealed: a context decides which values a write drops. A forged one
//! (say, a counter of `u64::MAX` for a real actor) or one taken from another
//! key would cover dots the client never saw, and the write would silently
//! discard acknowledged values, or every later write. So every token carries
//! a MAC over the cluster id, the key and the clock, keyed with the cluster's
//! secret ([`ContextSeal`]); a token that does not verify for this key in this
//! cluster is refused (400), never guessed at.
//!
//! Layout before base64: a version byte (2), then one
//! 16-byte entry per actor, `actor` and `counter` as big-endian u64, actors
//! strictly increasing and counters above zero, then a 16-byte tag: the first
//! 16 bytes of HMAC-SHA256(secret, "vinzclortho context v2" | cluster id |
//! key's hash input | version and entries). Version 1 tokens (unsealed,
//! before this format) are refused: the client reads the key again.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::key::ObjectKey;
use super::vclock::VersionVector;

const VERSION: u8 = 2;
const LEGACY_VERSION: u8 = 1;
const ENTRY_BYTES: usize = 16;
const TAG_BYTES: usize = 16;
const DOMAIN: &[u8] = b"vinzclortho context v2";
/// Longest token accepted: 379 actors, far beyond any real key's history.
pub const MAX_CONTEXT_CHARS: usize = 8192;
/// Length of the cluster secret that keys the seal.
pub const SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context is {0} characters long, above the limit of {MAX_CONTEXT_CHARS}")]
    TooLarge(usize),
    #[error("context is not base64")]
    NotBase64,
    #[error("context is empty")]
    Empty,
    #[error("context has unknown version {0}")]
    UnknownVersion(u8),
    #[error("context comes from an older release that did not seal contexts; read the key again for a new one")]
    Unsealed,
    #[error("context has a truncated entry")]
    Truncated,
    #[error("context entries are not in order or repeat an actor")]
    Unordered,
    #[error("context has a zero counter")]
    ZeroCounter,
    #[error("context was not issued for this key by this cluster (forged, edited, or taken from another key)")]
    Forged,
}

/// The cluster-wide secret that seals contexts. Created with the cluster,
/// handed to a node when it joins, kept in its data directory; never gossiped
/// and never shown (its `Debug` prints nothing of it).
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret([u8; SECRET_BYTES]);

impl ClusterSecret {
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> ClusterSecret {
        ClusterSecret(bytes)
    }

    pub fn try_from_slice(raw: &[u8]) -> Option<ClusterSecret> {
        raw.try_into().ok().map(ClusterSecret)
    }

    pub fn as_bytes(&self) -> &[u8; SECRET_BYTES] {
        &self.0
    }
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Seals clocks into tokens and opens tokens back into clocks, for one
/// cluster.
#[derive(Clone, Debug)]
pub struct ContextSeal {
    secret: ClusterSecret,
    cluster_id: u64,
}

impl ContextSeal {
    pub fn new(secret: ClusterSecret, cluster_id: u64) -> ContextSeal {
        ContextSeal { secret, cluster_id }
    }

    /// The token for `clock`, valid for `key` in this cluster only.
    pub fn seal(&self, key: &ObjectKey, clock: &VersionVector) -> String {
        URL_SAFE_NO_PAD.encode(self.sealed(key, clock))
    }

    /// The same token in standard base64 with padding: Riak's
    /// `X-Riak-Vclock`, which Riak's clients base64-decode and re-encode
    /// (so it must survive that round trip unchanged). [`ContextSeal::open`]
    /// takes either form.
    pub fn seal_standard(&self, key: &ObjectKey, clock: &VersionVector) -> String {
        STANDARD.encode(self.sealed(key, clock))
    }

    fn sealed(&self, key: &ObjectKey, clock: &VersionVector) -> Vec<u8> {
        let mut raw = Vec::with_capacity(1 + clock.len() * ENTRY_BYTES + TAG_BYTES);
        raw.push(VERSION);
        for (actor, counter) in clock.iter() {
            raw.extend_from_slice(&actor.to_be_bytes());
            raw.extend_from_slice(&counter.to_be_bytes());
        }
        let tag = self.mac(key, &raw).finalize().into_bytes();
        raw.extend_from_slice(&tag[..TAG_BYTES]);
        raw
    }

    /// The clock in `token`, if this cluster sealed it for `key`. Checks the
    /// shape first (cheap, and says what is wrong), then the tag.
    pub fn open(&self, key: &ObjectKey, token: &str) -> Result<VersionVector, ContextError> {
        if token.len() > MAX_CONTEXT_CHARS {
            return Err(ContextError::TooLarge(token.len()));
        }
        let token = token.trim();
        let raw =
            URL_SAFE_NO_PAD.decode(token).or_else(|_| STANDARD.decode(token)).map_err(|_| ContextError::NotBase64)?;
        let (&version, rest) = raw.split_first().ok_or(ContextError::Empty)?;
        match version {
            VERSION => {}
            LEGACY_VERSION => return Err(ContextError::Unsealed),
            other => return Err(ContextError::UnknownVersion(other)),
        }
        if rest.len() < TAG_BYTES || !(rest.len() - TAG_BYTES).is_multiple_of(ENTRY_BYTES) {
            return Err(ContextError::Truncated);
        }
        let (signed, tag) = raw.split_at(raw.len() - TAG_BYTES);
        let clock = parse_entries(&signed[1..])?;
        self.mac(key, signed).verify_truncated_left(tag).map_err(|_| ContextError::Forged)?;
        Ok(clock)
    }

    fn mac(&self, key: &ObjectKey, signed: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(DOMAIN);
        mac.update(&self.cluster_id.to_be_bytes());
        let key_bytes = key.hash_input();
        // Length-prefixed, so no key's bytes can run into the clock's.
        mac.update(&(key_bytes.len() as u64).to_be_bytes());
        mac.update(&key_bytes);
        mac.update(signed);
        mac
    }
}

fn parse_entries(body: &[u8]) -> Result<VersionVector, ContextError> {
    let mut entries = Vec::with_capacity(body.len() / ENTRY_BYTES);
    for chunk in body.chunks_exact(ENTRY_BYTES) {
        let actor = u64::from_be_bytes(chunk[..8].try_into().expect("8 bytes"));
        let counter = u64::from_be_bytes(chunk[8..].try_into().expect("8 bytes"));
        if counter == 0 {
            return Err(ContextError::ZeroCounter);
        }
        if entries.last().is_some_and(|(last, _)| *last >= actor) {
            return Err(ContextError::Unordered);
        }
        entries.push((actor, counter));
    }
    Ok(VersionVector::from_entries(entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seal() -> ContextSeal {
        ContextSeal::new(ClusterSecret::from_bytes([7; SECRET_BYTES]), 0xabc)
    }

    fn key(k: &str) -> ObjectKey {
        ObjectKey::in_default_bucket(k.to_owned())
    }

    /// A token with a valid tag over arbitrary body bytes, to reach the
    /// shape checks behind the tag.
    fn sealed_raw(body: &[u8]) -> String {
        let s = seal();
        let mut raw = vec![VERSION];
        raw.extend_from_slice(body);
        let tag = s.mac(&key("k"), &raw).finalize().into_bytes();
        raw.extend_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(raw)
    }

    fn entries(pairs: &[(u64, u64)]) -> Vec<u8> {
        pairs.iter().flat_map(|(a, c)| [a.to_be_bytes(), c.to_be_bytes()].concat()).collect()
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let s = seal();
        let k = key("k");
        let good = URL_SAFE_NO_PAD.decode(s.seal(&k, &VersionVector::from_entries([(1, 2), (3, 4)]))).unwrap();
        let cases: Vec<(String, ContextError)> = vec![
            ("".into(), ContextError::Empty),
            ("!!!".into(), ContextError::NotBase64),
            ("a+b".into(), ContextError::NotBase64),
            ("a-b/".into(), ContextError::NotBase64),
            (URL_SAFE_NO_PAD.encode([3u8]), ContextError::UnknownVersion(3)),
            (URL_SAFE_NO_PAD.encode([1u8]), ContextError::Unsealed),
            (URL_SAFE_NO_PAD.encode([2u8]), ContextError::Truncated),
            (URL_SAFE_NO_PAD.encode(&good[..good.len() - 3]), ContextError::Truncated),
            (sealed_raw(&entries(&[(1, 0)])), ContextError::ZeroCounter),
            (sealed_raw(&entries(&[(5, 1), (2, 1)])), ContextError::Unordered),
            ("A".repeat(MAX_CONTEXT_CHARS + 1), ContextError::TooLarge(MAX_CONTEXT_CHARS + 1)),
        ];
        for (token, expected) in cases {
            assert_eq!(s.open(&k, &token), Err(expected), "{token:.40}");
        }
    }

    #[test]
    fn a_forged_counter_is_refused() {
        // The attack from outside: take a real token, raise one actor's
        // counter to u64::MAX, keep the tag.
        let s = seal();
        let k = key("k");
        let mut raw = URL_SAFE_NO_PAD.decode(s.seal(&k, &VersionVector::from_entries([(9, 3)]))).unwrap();
        raw[9..17].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(s.open(&k, &URL_SAFE_NO_PAD.encode(&raw)), Err(ContextError::Forged));
        // And an unsealed token naming it, as an older release issued them.
        let legacy = URL_SAFE_NO_PAD.encode([[1u8].as_slice(), &entries(&[(9, u64::MAX)])].concat());
        assert_eq!(s.open(&k, &legacy), Err(ContextError::Unsealed));
    }

    #[test]
    fn a_token_is_bound_to_its_key_and_cluster() {
        let s = seal();
        let clock = VersionVector::from_entries([(1, 5)]);
        let token = s.seal(&key("a"), &clock);
        assert_eq!(s.open(&key("a"), &token), Ok(clock));
        assert_eq!(s.open(&key("b"), &token), Err(ContextError::Forged));
        let other_bucket = ObjectKey::new("default", "other", "a");
        assert_eq!(s.open(&other_bucket, &token), Err(ContextError::Forged));
        let other_cluster = ContextSeal::new(ClusterSecret::from_bytes([7; SECRET_BYTES]), 0xabd);
        assert_eq!(other_cluster.open(&key("a"), &token), Err(ContextError::Forged));
        let other_secret = ContextSeal::new(ClusterSecret::from_bytes([8; SECRET_BYTES]), 0xabc);
        assert_eq!(other_secret.open(&key("a"), &token), Err(ContextError::Forged));
    }

    #[test]
    fn empty_clock_has_a_token() {
        let s = seal();
        assert_eq!(s.open(&key("k"), &s.seal(&key("k"), &VersionVector::new())), Ok(VersionVector::new()));
    }

    #[test]
    fn the_secret_is_never_printed() {
        let s = seal();
        assert!(!format!("{s:?}").contains("7, 7"));
    }

    proptest! {
        #[test]
        fn round_trip(entries in proptest::collection::vec((any::<u64>(), 1u64..), 0..20), k in ".{0,40}") {
            let s = seal();
            let clock = VersionVector::from_entries(entries);
            let token = s.seal(&key(&k), &clock);
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert!(token.len() <= MAX_CONTEXT_CHARS);
            prop_assert_eq!(s.open(&key(&k), &token), Ok(clock.clone()));
            // Riak's form of the same token (X-Riak-Vclock) opens too.
            let riak = s.seal_standard(&key(&k), &clock);
            prop_assert_eq!(STANDARD.decode(&riak).unwrap(), URL_SAFE_NO_PAD.decode(&token).unwrap());
            prop_assert_eq!(s.open(&key(&k), &riak), Ok(clock));
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,200}") {
            let _ = seal().open(&key("k"), &s);
        }

        #[test]
        fn arbitrary_bytes_never_panic_nor_verify(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let token = URL_SAFE_NO_PAD.encode(&raw);
            prop_assert!(seal().open(&key("k"), &token).is_err());
        }

        #[test]
        fn any_flipped_bit_is_refused(entries in proptest::collection::vec((any::<u64>(), 1u64..), 0..6), bit in any::<usize>()) {
            let s = seal();
            let token = s.seal(&key("k"), &VersionVector::from_entries(entries));
            let mut raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
            let bit = bit % (raw.len() * 8);
            raw[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(s.open(&key("k"), &URL_SAFE_NO_PAD.encode(&raw)).is_err());
        }
    }
}
