//! Per-request quorum parameters (`?r=`, `?w=`, `?pr=`, `?pw=`), in Riak's
//! vocabulary.

use std::fmt;
use std::str::FromStr;

/// A requested quorum size before it is resolved against N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuorumParam {
    /// The cluster's configured R or W.
    #[default]
    Default,
    One,
    /// A majority of N.
    Quorum,
    All,
    Count(u32),
}

impl FromStr for QuorumParam {
    type Err = String;

    fn from_str(s: &str) -> Result<QuorumParam, String> {
        match s {
            "default" => Ok(QuorumParam::Default),
            "one" => Ok(QuorumParam::One),
            "quorum" => Ok(QuorumParam::Quorum),
            "all" => Ok(QuorumParam::All),
            _ => s
                .parse::<u32>()
                .map(QuorumParam::Count)
                .map_err(|_| format!("{s:?} is not a number, one, quorum, all or default")),
        }
    }
}

impl fmt::Display for QuorumParam {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QuorumParam::Default => f.write_str("default"),
            QuorumParam::One => f.write_str("one"),
            QuorumParam::Quorum => f.write_str("quorum"),
            QuorumParam::All => f.write_str("all"),
            QuorumParam::Count(n) => write!(f, "{n}"),
        }
    }
}

impl QuorumParam {
    /// The number of replicas to wait for, given the configured default and
    /// N. Zero and values above N are refused: they cannot mean anything
    /// useful and usually reveal a client bug.
    pub fn resolve(self, default: usize, n_val: usize) -> Result<usize, String> {
        let needed = match self {
            QuorumParam::Default => default,
            QuorumParam::One => 1,
            QuorumParam::Quorum => n_val / 2 + 1,
            QuorumParam::All => n_val,
            QuorumParam::Count(n) => n as usize,
        };
        if needed == 0 {
            return Err("must be at least 1".into());
        }
        if needed > n_val {
            return Err(format!("{needed} is above n_val={n_val}"));
        }
        Ok(needed)
    }
}

impl QuorumParam {
    /// The primaries to wait for (`?pr=`, `?pw=`): none by default or for 0
    /// (as in Riak), else like [`QuorumParam::resolve`]; above N is refused.
    pub fn resolve_primaries(self, n_val: usize) -> Result<usize, String> {
        match self {
            QuorumParam::Default | QuorumParam::Count(0) => Ok(0),
            other => other.resolve(0, n_val),
        }
    }
}

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
