//! What a benchmark run asks for: the operation mix, which key each
//! operation touches, and the values it writes. Pure: randomness comes in
//! as an `Rng` the caller seeds.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::distr::Distribution as _;
use rand_distr::Zipf;
use serde::Serialize;

/// One kind of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Read,
    Write,
    Delete,
}

impl Op {
    pub const ALL: [Op; 3] = [Op::Read, Op::Write, Op::Delete];

    pub fn name(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Delete => "delete",
        }
    }

    /// Position in per-operation arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Relative weights of reads, writes and deletes: `read=95,write=5` sends
/// 95 reads for every 5 writes. Weights need not add up to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    weights: [u32; 3],
}

impl Mix {
    pub fn new(read: u32, write: u32, delete: u32) -> Result<Mix, String> {
        let mix = Mix { weights: [read, write, delete] };
        if mix.total() == 0 {
            return Err("every weight is 0: give at least one operation a weight above 0".into());
        }
        Ok(mix)
    }

    pub fn weight(&self, op: Op) -> u32 {
        self.weights[op.index()]
    }

    fn total(&self) -> u64 {
        self.weights.iter().map(|&w| u64::from(w)).sum()
    }

    /// The operation for a roll in `0..total`: reads first, then writes,
    /// then deletes, each taking as many rolls as its weight.
    fn pick(&self, mut roll: u64) -> Op {
        for op in Op::ALL {
            let w = u64::from(self.weight(op));
            if roll < w {
                return op;
            }
            roll -= w;
        }
        unreachable!("roll {roll} is below the total weight")
    }

    pub fn sample(&self, rng: &mut impl Rng) -> Op {
        self.pick(rng.random_range(0..self.total()))
    }
}

impl FromStr for Mix {
    type Err = String;

    /// `read=50,write=50,delete=0`; `get`/`put`/`del` are accepted too and a
    /// missing operation has weight 0.
    fn from_str(s: &str) -> Result<Mix, String> {
        let mut weights: [Option<u32>; 3] = [None; 3];
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) =
                part.split_once('=').ok_or_else(|| format!("{part:?}: expected OP=WEIGHT, e.g. read=95"))?;
            let op = match name.trim() {
                "read" | "get" => Op::Read,
                "write" | "put" => Op::Write,
                "delete" | "del" => Op::Delete,
                other => return Err(format!("unknown operation {other:?}: use read, write or delete")),
            };
            let weight: u32 =
                weight.trim().parse().map_err(|_| format!("{part:?}: the weight must be a whole number 0 or above"))?;
            if weights[op.index()].replace(weight).is_some() {
                return Err(format!("{} is given twice", op.name()));
            }
        }
        let [read, write, delete] = weights.map(|w| w.unwrap_or(0));
        Mix::new(read, write, delete)
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "read={},write={},delete={}", self.weights[0], self.weights[1], self.weights[2])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Key of rank k (from 1) has probability proportional to 1/k^s
    /// (--zipf-exponent s): a few hot keys, a long cold tail.
    Zipf,
}

/// Draws key indexes in `0..count`; with Zipf, index 0 is the hottest.
#[derive(Debug, Clone)]
pub struct KeyChooser {
    count: u64,
    zipf: Option<Zipf<f64>>,
}

impl KeyChooser {
    pub fn new(count: u64, distribution: Distribution, exponent: f64) -> Result<KeyChooser, String> {
        if count == 0 {
            return Err("there must be at least one key".into());
        }
        let zipf = match distribution {
            Distribution::Uniform => None,
            Distribution::Zipf => Some(
                Zipf::new(count as f64, exponent)
                    .map_err(|e| format!("zipf over {count} keys with exponent {exponent}: {e}"))?,
            ),
        };
        Ok(KeyChooser { count, zipf })
    }

    pub fn sample(&self, rng: &mut impl Rng) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.count),
            // Ranks are 1..=count as whole floats; clamp guards rounding.
            Some(zipf) => (zipf.sample(rng) as u64).clamp(1, self.count) - 1,
        }
    }
}

/// The keys one worker owns in --check mode (and preloads in any mode):
/// worker w of c owns indexes w, w + c, w + 2c, ... So no key has two
/// writers, and each worker can know what a read must return.
#[derive(Debug, Clone, Copy)]
pub struct Shard {
    pub worker: u64,
    pub workers: u64,
    pub keys: u64,
}

impl Shard {
    pub fn len(&self) -> u64 {
        self.keys.saturating_sub(self.worker).div_ceil(self.workers)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The global key index of this shard's j-th key.
    pub fn key(&self, j: u64) -> u64 {
        debug_assert!(j < self.len());
        self.worker + j * self.workers
    }

    pub fn owns(&self, key: u64) -> bool {
        key < self.keys && key % self.workers == self.worker
    }
}

/// A written value: a token naming its writer, key and sequence number,
/// padded to the value size. Every write of a run is distinct, so a read
/// tells exactly which write it saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub worker: u64,
    pub key: u64,
    pub seq: u64,
}

const PAD: u8 = b'.';

impl Token {
    /// The value bytes: `worker:key:seq:` then padding up to `size` (longer
    /// than `size` if the token alone is).
    pub fn value(&self, size: usize) -> Vec<u8> {
        let mut v = format!("{}:{}:{}:", self.worker, self.key, self.seq).into_bytes();
        if v.len() < size {
            v.resize(size, PAD);
        }
        v
    }

    /// The token a value was made from, if it is exactly such a value.
    pub fn parse(value: &[u8], size: usize) -> Option<Token> {
        let text = std::str::from_utf8(value).ok()?;
        let mut fields = text.splitn(4, ':');
        let mut next = || fields.next()?.parse::<u64>().ok();
        let token = Token { worker: next()?, key: next()?, seq: next()? };
        (token.value(size) == value).then_some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn mix_parses_and_refuses_with_reasons() {
        assert_eq!("read=50,write=50,delete=0".parse::<Mix>().unwrap(), Mix::new(50, 50, 0).unwrap());
        assert_eq!("get=95, put=5".parse::<Mix>().unwrap(), Mix::new(95, 5, 0).unwrap());
        assert_eq!("delete=1".parse::<Mix>().unwrap(), Mix::new(0, 0, 1).unwrap());
        assert_eq!(Mix::new(1, 2, 3).unwrap().to_string().parse::<Mix>().unwrap(), Mix::new(1, 2, 3).unwrap());
        for (bad, needle) in [
            ("read=0,write=0", "every weight is 0"),
            ("", "every weight is 0"),
            ("scan=5", "unknown operation"),
            ("read", "expected OP=WEIGHT"),
            ("read=-1", "whole number"),
            ("read=1.5", "whole number"),
            ("read=1,get=2", "given twice"),
        ] {
            let err = bad.parse::<Mix>().unwrap_err();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn mix_samples_in_proportion() {
        let mix = Mix::new(95, 5, 0).unwrap();
        assert_eq!((0..95).map(|r| mix.pick(r)).collect::<Vec<_>>(), vec![Op::Read; 95]);
        assert_eq!((95..100).map(|r| mix.pick(r)).collect::<Vec<_>>(), vec![Op::Write; 5]);
        let mut rng = StdRng::seed_from_u64(7);
        let writes = (0..100_000).filter(|_| mix.sample(&mut rng) == Op::Write).count();
        assert!((4_500..5_500).contains(&writes), "{writes}");
    }

    #[test]
    fn uniform_keys_cover_the_range_evenly() {
        let chooser = KeyChooser::new(10, Distribution::Uniform, 0.0).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0u32; 10];
        for _ in 0..100_000 {
            counts[chooser.sample(&mut rng) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (9_000..11_000).contains(&c)), "{counts:?}");
    }

    /// Rank k (from 1) has probability k^-s / H(n, s): check the observed
    /// frequencies of the first ranks and of the whole head against that.
    #[test]
    fn zipf_keys_follow_the_power_law() {
        let (n, s, draws) = (1000u64, 0.99f64, 400_000u32);
        let chooser = KeyChooser::new(n, Distribution::Zipf, s).unwrap();
        let mut rng = StdRng::seed_from_u64(42);
        let mut counts = vec![0u32; n as usize];
        for _ in 0..draws {
            let k = chooser.sample(&mut rng);
            assert!(k < n);
            counts[k as usize] += 1;
        }
        let harmonic: f64 = (1..=n).map(|k| (k as f64).powf(-s)).sum();
        let expected = |k: u64| f64::from(draws) * (k as f64).powf(-s) / harmonic;
        for k in [1u64, 2, 3, 10, 100] {
            let got = f64::from(counts[(k - 1) as usize]);
            let want = expected(k);
            assert!((got - want).abs() < 0.1 * want, "rank {k}: {got} draws, expected about {want:.0}");
        }
        // The 10 hottest of 1000 keys get about 39% of requests.
        let head: u32 = counts[..10].iter().sum();
        let want: f64 = (1..=10).map(expected).sum();
        assert!((f64::from(head) - want).abs() < 0.03 * want, "head {head}, expected {want:.0}");
        // Exponent 0 is uniform.
        let flat = KeyChooser::new(4, Distribution::Zipf, 0.0).unwrap();
        let mut c = [0u32; 4];
        for _ in 0..40_000 {
            c[flat.sample(&mut rng) as usize] += 1;
        }
        assert!(c.iter().all(|&x| (9_000..11_000).contains(&x)), "{c:?}");
        assert!(KeyChooser::new(10, Distribution::Zipf, -1.0).is_err());
    }

    #[test]
    fn shards_partition_the_keys() {
        for (keys, workers) in [(10u64, 3u64), (3, 3), (2, 5), (1000, 64)] {
            let mut seen = vec![0u8; keys as usize];
            for worker in 0..workers {
                let shard = Shard { worker, workers, keys };
                for j in 0..shard.len() {
                    let k = shard.key(j);
                    assert!(shard.owns(k));
                    seen[k as usize] += 1;
                }
            }
            assert!(seen.iter().all(|&n| n == 1), "keys={keys} workers={workers}: {seen:?}");
        }
    }

    #[test]
    fn tokens_round_trip_and_reject_other_values() {
        let t = Token { worker: 3, key: 17, seq: 9 };
        let v = t.value(100);
        assert_eq!(v.len(), 100);
        assert_eq!(Token::parse(&v, 100), Some(t));
        assert_eq!(Token::parse(&v, 99), None, "wrong length");
        assert_eq!(Token::parse(b"3:17:9:", 100), None, "truncated");
        assert_eq!(Token::parse(b"hello", 5), None);
        let short = t.value(2);
        assert_eq!(Token::parse(&short, 2), Some(t), "the token is kept whole when longer than the size");
    }
}
