//! The --check oracle: what a read of a key may return, as known by the one
//! worker that writes that key. Pure.
//!
//! A key's single writer knows the outcome of each of its writes:
//! acknowledged (2xx), refused (4xx: nothing was stored), or unknown (a
//! timeout, a 5xx, a broken connection: it may or may not have landed).
//!
//! * After an acknowledged write or delete, a read must return exactly it.
//! * After unknown outcomes, a read may return the last acknowledged state
//!   or any of the unknown writes since.
//! * A value whose outcome was unknown may have landed on some replica
//!   without being seen by a later write's context; it can then come back as
//!   a sibling of that later write (Dynamo keeps concurrent versions). So
//!   siblings are accepted only when they are all values this worker wrote
//!   and every one but the acceptable ones had an unknown outcome. Without
//!   failures, a single writer never sees siblings: any 300 is a mismatch.

use std::fmt;

/// What one read returned, as far as the oracle cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// 404: absent or deleted.
    Absent,
    /// One value: the sequence number of the write it came from, or `None`
    /// for a value no write of this worker to this key made.
    Value(Option<u64>),
    /// Several siblings, each as in `Value`.
    Siblings(Vec<Option<u64>>),
}

/// A version of a key: a write's sequence number, or `None` for absent.
type Version = Option<u64>;

#[derive(Debug, Clone)]
pub struct KeyOracle {
    /// What a read may return now: the last acknowledged version, then the
    /// versions of writes with unknown outcome since.
    acceptable: Vec<Version>,
    /// Values of every write with an unknown outcome, ever: they may linger
    /// as siblings.
    ghosts: Vec<u64>,
}

impl Default for KeyOracle {
    /// A key of this run that nobody wrote yet is absent.
    fn default() -> KeyOracle {
        KeyOracle { acceptable: vec![None], ghosts: Vec::new() }
    }
}

/// How a write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Acknowledged,
    Refused,
    Unknown,
}

impl KeyOracle {
    /// Records a write of `version` (`None` for a delete).
    pub fn wrote(&mut self, version: Version, outcome: Outcome) {
        match outcome {
            Outcome::Acknowledged => self.acceptable = vec![version],
            Outcome::Refused => {}
            Outcome::Unknown => {
                self.acceptable.push(version);
                self.ghosts.extend(version);
            }
        }
    }

    /// Whether some write's outcome is not known: the next write should
    /// read first, to carry a context that covers it if it landed.
    pub fn uncertain(&self) -> bool {
        self.acceptable.len() > 1
    }

    pub fn check(&self, observed: &Observed) -> Result<(), Mismatch> {
        let ok = match observed {
            Observed::Absent => self.acceptable.contains(&None),
            Observed::Value(v) => v.is_some() && self.acceptable.contains(v),
            Observed::Siblings(values) => {
                !self.ghosts.is_empty()
                    && values.iter().all(|v| match v {
                        Some(seq) => self.ghosts.contains(seq) || self.acceptable.contains(v),
                        None => false,
                    })
                    && values.iter().any(|v| self.acceptable.contains(v))
            }
        };
        if ok { Ok(()) } else { Err(Mismatch { observed: observed.clone(), acceptable: self.acceptable.clone() }) }
    }
}

/// A read that returned what no acknowledged or possible write explains.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub observed: Observed,
    pub acceptable: Vec<Version>,
}

fn version(v: &Version) -> String {
    match v {
        Some(seq) => format!("write #{seq}"),
        None => "absent".into(),
    }
}

fn value(v: &Option<u64>) -> String {
    match v {
        Some(seq) => format!("write #{seq}"),
        None => "a value this key was never written".into(),
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.observed {
            Observed::Absent => f.write_str("read absent")?,
            Observed::Value(v) => write!(f, "read {}", value(v))?,
            Observed::Siblings(vs) => {
                write!(f, "read {} siblings ({})", vs.len(), vs.iter().map(value).collect::<Vec<_>>().join(", "))?
            }
        }
        let expected: Vec<String> = self.acceptable.iter().map(version).collect();
        write!(f, ", expected {}", expected.join(" or "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Observed::*;
    use Outcome::*;

    #[test]
    fn a_fresh_key_is_absent() {
        let k = KeyOracle::default();
        assert!(k.check(&Absent).is_ok());
        assert!(k.check(&Value(Some(0))).is_err());
        assert!(!k.uncertain());
    }

    #[test]
    fn acknowledged_writes_must_be_read_exactly() {
        let mut k = KeyOracle::default();
        k.wrote(Some(1), Acknowledged);
        assert!(k.check(&Value(Some(1))).is_ok());
        for wrong in [Absent, Value(Some(0)), Value(None), Siblings(vec![Some(1), Some(1)])] {
            assert!(k.check(&wrong).is_err(), "{wrong:?}");
        }
        k.wrote(Some(2), Acknowledged);
        let stale = k.check(&Value(Some(1))).unwrap_err();
        assert_eq!(stale.to_string(), "read write #1, expected write #2");
        k.wrote(None, Acknowledged);
        assert!(k.check(&Absent).is_ok());
        assert!(k.check(&Value(Some(2))).is_err());
    }

    #[test]
    fn refused_writes_change_nothing() {
        let mut k = KeyOracle::default();
        k.wrote(Some(1), Acknowledged);
        k.wrote(Some(2), Refused);
        assert!(k.check(&Value(Some(1))).is_ok());
        assert!(k.check(&Value(Some(2))).is_err());
    }

    #[test]
    fn unknown_outcomes_allow_either_until_the_next_acknowledged_write() {
        let mut k = KeyOracle::default();
        k.wrote(Some(1), Acknowledged);
        k.wrote(Some(2), Unknown);
        assert!(k.uncertain());
        assert!(k.check(&Value(Some(1))).is_ok());
        assert!(k.check(&Value(Some(2))).is_ok());
        assert!(k.check(&Absent).is_err());
        k.wrote(None, Unknown);
        assert!(k.check(&Absent).is_ok());
        k.wrote(Some(3), Acknowledged);
        assert!(!k.uncertain());
        assert!(k.check(&Value(Some(3))).is_ok());
        assert!(k.check(&Value(Some(2))).is_err(), "a lost write must not come back alone");
        // It may come back as a sibling of the acknowledged one.
        assert!(k.check(&Siblings(vec![Some(2), Some(3)])).is_ok());
        assert!(k.check(&Siblings(vec![Some(1), Some(3)])).is_err(), "1 was superseded by an acknowledged write");
        assert!(k.check(&Siblings(vec![Some(2), None])).is_err());
        assert!(k.check(&Siblings(vec![Some(2)])).is_err(), "the acknowledged write is missing");
    }
}
