//! Per-request quorum parameters (`?r=`, `?w=`, `?pr=`, `?pw=`), in Riak's
//! vocabulary. [`QuorumParam`] lives in `core::bucket` (bucket properties
//! use it too) and is re-exported here.

pub use crate::core::bucket::QuorumParam;

/// A read's quorum parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    pub r: QuorumParam,
    /// Primaries that must answer for themselves (fallbacks do not count).
    pub pr: QuorumParam,
    /// Riak's `notfound_ok`: whether a replica without the key counts
    /// towards R (`None`: yes, Riak's default).
    pub notfound_ok: Option<bool>,
    /// Riak's `basic_quorum`: with `notfound_ok=false`, answer not found as
    /// soon as a majority of replicas said so (`None`: no).
    pub basic_quorum: Option<bool>,
}

/// A write's quorum parameters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteOptions {
    pub w: QuorumParam,
    /// Primaries that must acknowledge for themselves.
    pub pw: QuorumParam,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_resolve_table() {
        // (input, default, n_val, expected)
        let cases: &[(&str, usize, usize, Result<usize, ()>)] = &[
            ("default", 2, 3, Ok(2)),
            ("one", 2, 3, Ok(1)),
            ("quorum", 2, 3, Ok(2)),
            ("quorum", 2, 5, Ok(3)),
            ("all", 2, 3, Ok(3)),
            ("3", 2, 3, Ok(3)),
            ("4", 2, 3, Err(())),
            ("0", 2, 3, Err(())),
        ];
        for (input, default, n, expected) in cases {
            let got = input.parse::<QuorumParam>().unwrap().resolve(*default, *n).map_err(|_| ());
            assert_eq!(got, *expected, "{input}");
        }
        // pr/pw: none unless asked; 0 is none; above N is refused.
        let primaries: &[(&str, usize, Result<usize, ()>)] = &[
            ("default", 3, Ok(0)),
            ("0", 3, Ok(0)),
            ("one", 3, Ok(1)),
            ("quorum", 5, Ok(3)),
            ("all", 3, Ok(3)),
            ("4", 3, Err(())),
        ];
        for (input, n, expected) in primaries {
            let got = input.parse::<QuorumParam>().unwrap().resolve_primaries(*n).map_err(|_| ());
            assert_eq!(got, *expected, "pr/pw={input}");
        }
        for bad in ["", "-1", "two", "1.5", "99999999999"] {
            assert!(bad.parse::<QuorumParam>().is_err(), "{bad}");
        }
    }
}
