//! The causal context token clients carry between a read and a write
//! (`X-VinzClortho-Context`): an opaque, URL-safe string.
//!
//! Layout before base64url (no padding): a version byte (1), then one
//! 16-byte entry per actor, `actor` and `counter` as big-endian u64, actors
//! strictly increasing and counters above zero. Decoding checks all of it,
//! so a truncated, edited or foreign token is refused rather than guessed at.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::vclock::VersionVector;

const VERSION: u8 = 1;
const ENTRY_BYTES: usize = 16;
/// Longest token accepted: 380 actors, far beyond any real key's history.
pub const MAX_CONTEXT_CHARS: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("context is {0} characters long, above the limit of {MAX_CONTEXT_CHARS}")]
    TooLarge(usize),
    #[error("context is not URL-safe base64")]
    NotBase64,
    #[error("context is empty")]
    Empty,
    #[error("context has unknown version {0}")]
    UnknownVersion(u8),
    #[error("context has a truncated entry")]
    Truncated,
    #[error("context entries are not in order or repeat an actor")]
    Unordered,
    #[error("context has a zero counter")]
    ZeroCounter,
}

pub fn encode(clock: &VersionVector) -> String {
    let mut raw = Vec::with_capacity(1 + clock.len() * ENTRY_BYTES);
    raw.push(VERSION);
    for (actor, counter) in clock.iter() {
        raw.extend_from_slice(&actor.to_be_bytes());
        raw.extend_from_slice(&counter.to_be_bytes());
    }
    URL_SAFE_NO_PAD.encode(raw)
}

pub fn decode(token: &str) -> Result<VersionVector, ContextError> {
    if token.len() > MAX_CONTEXT_CHARS {
        return Err(ContextError::TooLarge(token.len()));
    }
    let raw = URL_SAFE_NO_PAD.decode(token.trim()).map_err(|_| ContextError::NotBase64)?;
    let (&version, body) = raw.split_first().ok_or(ContextError::Empty)?;
    if version != VERSION {
        return Err(ContextError::UnknownVersion(version));
    }
    if body.len() % ENTRY_BYTES != 0 {
        return Err(ContextError::Truncated);
    }
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

    #[test]
    fn malformed_tokens_are_refused() {
        let good = URL_SAFE_NO_PAD.decode(encode(&VersionVector::from_entries([(1, 2), (3, 4)]))).unwrap();
        let cases: Vec<(String, ContextError)> = vec![
            ("".into(), ContextError::Empty),
            ("!!!".into(), ContextError::NotBase64),
            ("a+b/".into(), ContextError::NotBase64),
            (URL_SAFE_NO_PAD.encode([2u8]), ContextError::UnknownVersion(2)),
            (URL_SAFE_NO_PAD.encode(&good[..good.len() - 3]), ContextError::Truncated),
            (URL_SAFE_NO_PAD.encode([[1u8].as_slice(), &[0; 15], &[1], &[0; 16]].concat()), ContextError::ZeroCounter),
            ("A".repeat(MAX_CONTEXT_CHARS + 1), ContextError::TooLarge(MAX_CONTEXT_CHARS + 1)),
        ];
        for (token, expected) in cases {
            assert_eq!(decode(&token), Err(expected), "{token:.40}");
        }
        let mut unordered = vec![1u8];
        for (a, c) in [(5u64, 1u64), (2, 1)] {
            unordered.extend_from_slice(&a.to_be_bytes());
            unordered.extend_from_slice(&c.to_be_bytes());
        }
        assert_eq!(decode(&URL_SAFE_NO_PAD.encode(unordered)), Err(ContextError::Unordered));
    }

    #[test]
    fn empty_clock_has_a_token() {
        assert_eq!(decode(&encode(&VersionVector::new())), Ok(VersionVector::new()));
    }

    proptest! {
        #[test]
        fn round_trip(entries in proptest::collection::vec((any::<u64>(), 1u64..), 0..20)) {
            let clock = VersionVector::from_entries(entries);
            let token = encode(&clock);
            prop_assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert_eq!(decode(&token), Ok(clock));
        }

        #[test]
        fn arbitrary_input_never_panics(s in ".{0,200}") {
            let _ = decode(&s);
        }
    }
}
