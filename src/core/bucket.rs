//! Riak's bucket types and bucket properties, as values: what a request's
//! quorum defaults are, how many replicas a bucket's keys have, and how the
//! cluster's gossiped records of them merge.
//!
//! Properties layer as in Riak: built-in defaults (from the cluster's N, R
//! and W), then the bucket type's properties, then the bucket's own
//! overrides ([`effective`]). Every record is a last-writer-wins register
//! stamped `(version, editor)`, the version a Lamport clock over the
//! records of its kind (as the token records of `core::security`): merging
//! keeps the larger stamp per type and per bucket, a semilattice join, so
//! gossip in any order converges. A type's `active` flag only ever turns on
//! (activation is irreversible in Riak too), so it merges by `or`.
//!
//! One deliberate difference from Riak: our `default` bucket type keeps
//! siblings (`allow_mult=true`, dotted version vectors), where Riak's
//! default type has `allow_mult=false`. A type or bucket may still ask for
//! `allow_mult=false`.
//!
//! `n_val` of a bucket is at most the cluster's N: a bucket's keys live on
//! the first `n_val` holders of the cluster's preference list for the key's
//! partition, so a bucket cannot have more replicas than the ring places.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::key::NodeId;

/// The bucket type every cluster has, always active.
pub const DEFAULT_TYPE: &str = "default";
/// The most bucket types a cluster keeps (a creation beyond it is refused).
pub const MAX_TYPES: usize = 1024;
/// The most buckets with their own properties a cluster keeps (a reset
/// bucket keeps its record, so that a stale view cannot bring its old
/// properties back).
pub const MAX_BUCKETS: usize = 65_536;
/// The longest bucket type or bucket name with properties.
pub const MAX_NAME_BYTES: usize = 255;
/// Properties the server does not know are kept (as Riak keeps them):
/// at most this many per record ...
pub const MAX_EXTRA_PROPS: usize = 16;
/// ... with names of at most this many bytes ...
pub const MAX_EXTRA_NAME_BYTES: usize = 64;
/// ... and values of at most this many bytes of JSON text.
pub const MAX_EXTRA_VALUE_BYTES: usize = 512;
/// A type's or bucket's own properties as JSON text (as gossiped): at
/// most this long, which bounds the gossiped state
/// (`rpc::membership::largest_state_bytes`).
pub const MAX_PROPS_BYTES: usize = 1024;

/// A requested quorum size before it is resolved against N, in Riak's
/// vocabulary (`?r=`, `?w=`, ... and the `r`, `w`, ... bucket properties).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum QuorumParam {
    /// The bucket's value, else the cluster's configured R or W.
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

    /// The primaries to wait for (`?pr=`, `?pw=`): none by default or for 0
    /// (as in Riak), else like [`QuorumParam::resolve`]; above N is refused.
    pub fn resolve_primaries(self, n_val: usize) -> Result<usize, String> {
        match self {
            QuorumParam::Default | QuorumParam::Count(0) => Ok(0),
            other => other.resolve(0, n_val),
        }
    }

    /// `self`, or `fallback` where `self` is `Default`.
    pub fn or(self, fallback: QuorumParam) -> QuorumParam {
        if self == QuorumParam::Default { fallback } else { self }
    }

    /// A property's value from JSON: a number (at least 1, or 0 where
    /// `zero_ok`: dw, pr and pw) or one of the words.
    fn from_json(value: &Value, zero_ok: bool) -> Option<QuorumParam> {
        match value {
            Value::Number(n) => {
                let n = u32::try_from(n.as_u64()?).ok()?;
                (n > 0 || zero_ok).then_some(QuorumParam::Count(n))
            }
            Value::String(s) if s.parse::<u32>().is_err() => s.parse().ok(),
            _ => None,
        }
    }

    fn to_json(self) -> Value {
        match self {
            QuorumParam::Count(n) => json!(n),
            other => json!(other.to_string()),
        }
    }
}

/// Properties as a type or a bucket sets them: only what it sets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PropsPatch {
    pub n_val: Option<u32>,
    pub allow_mult: Option<bool>,
    pub last_write_wins: Option<bool>,
    pub r: Option<QuorumParam>,
    pub w: Option<QuorumParam>,
    pub dw: Option<QuorumParam>,
    pub rw: Option<QuorumParam>,
    pub pr: Option<QuorumParam>,
    pub pw: Option<QuorumParam>,
    pub notfound_ok: Option<bool>,
    pub basic_quorum: Option<bool>,
    pub young_vclock: Option<u64>,
    pub old_vclock: Option<u64>,
    pub small_vclock: Option<u64>,
    pub big_vclock: Option<u64>,
    /// Properties this server does not interpret, as JSON text by name:
    /// Riak keeps unknown properties and shows them back.
    pub extra: BTreeMap<String, String>,
}

/// Properties shown by Riak that a client may send back unchanged (a
/// read-modify-write of the whole props) but cannot set: ignored on input.
const INFORMATIONAL: [&str; 7] = ["name", "type", "active", "claimant", "chash_keyfun", "linkfun", "dvv_enabled"];

/// A property with a bad value: its name and Riak's reason
/// (`not_integer`, `not_boolean`, `not_valid_quorum`) or our own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PropError {
    pub prop: String,
    pub reason: String,
}

/// Why properties were refused: every bad property, as Riak lists them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.to_json())]
pub struct PropsError(pub Vec<PropError>);

impl PropsError {
    fn one(prop: &str, reason: impl Into<String>) -> PropsError {
        PropsError(vec![PropError { prop: prop.to_owned(), reason: reason.into() }])
    }

    /// As Riak's `riak_kv_wm_props` answers a 400: a JSON object from each
    /// bad property to its reason.
    pub fn to_json(&self) -> String {
        let map: Map<String, Value> = self.0.iter().map(|e| (e.prop.clone(), json!(e.reason))).collect();
        Value::Object(map).to_string()
    }
}

impl PropsPatch {
    /// Parses a request body `{"props": {...}}`, validating each property
    /// as `riak_kv_bucket:validate` does: n_val and the vclock sizes
    /// positive integers, the booleans true/false (or "true"/"false", or a
    /// number, as Riak coerces them), r, w and rw a positive number or
    /// one/quorum/all, dw, pr and pw the same or 0. We also take "default"
    /// (the cluster's value). Unknown properties are kept, within bounds.
    pub fn from_body(body: &[u8]) -> Result<PropsPatch, PropsError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| PropsError::one("body", format!("not JSON: {e}; expected {{\"props\": {{...}}}}")))?;
        let props = value
            .as_object()
            .and_then(|o| o.get("props"))
            .and_then(Value::as_object)
            .ok_or_else(|| PropsError::one("body", "expected {\"props\": {...}}"))?;
        PropsPatch::from_json(props)
    }

    /// Validates a JSON object of properties (see [`PropsPatch::from_body`]).
    pub fn from_json(props: &Map<String, Value>) -> Result<PropsPatch, PropsError> {
        let mut patch = PropsPatch::default();
        let mut errors = Vec::new();
        let mut bad = |prop: &str, reason: &str| errors.push(PropError { prop: prop.into(), reason: reason.into() });
        for (name, value) in props {
            match name.as_str() {
                "n_val" => match positive(value) {
                    Some(n) if n <= u64::from(u32::MAX) => patch.n_val = Some(n as u32),
                    _ => bad(name, "not_integer"),
                },
                "young_vclock" | "old_vclock" | "small_vclock" | "big_vclock" => match positive(value) {
                    Some(n) => *patch.vclock_mut(name) = Some(n),
                    None => bad(name, "not_integer"),
                },
                "allow_mult" | "last_write_wins" | "notfound_ok" | "basic_quorum" => match coerce_bool(value) {
                    Some(b) => *patch.bool_mut(name) = Some(b),
                    None => bad(name, "not_boolean"),
                },
                "r" | "w" | "rw" | "dw" | "pr" | "pw" => {
                    let zero_ok = matches!(name.as_str(), "dw" | "pr" | "pw");
                    match QuorumParam::from_json(value, zero_ok) {
                        Some(q) => *patch.quorum_mut(name) = Some(q),
                        None => bad(name, "not_valid_quorum"),
                    }
                }
                // Commit hooks run Erlang code in Riak; we run none, so a
                // hook would be silently skipped: refused instead.
                "precommit" | "postcommit" => {
                    if value.as_array().is_none_or(|hooks| !hooks.is_empty()) {
                        bad(name, "commit hooks are not supported");
                    }
                }
                // What Riak has and we do not (README: not supported) is
                // refused rather than kept and silently not honoured: a
                // `datatype` would also make clients use the data-type
                // routes. Their off values are fine.
                "datatype" if !value.is_null() => bad(name, "data types other than counters are not supported"),
                "consistent" | "write_once" if value != &Value::Bool(false) && !value.is_null() => {
                    bad(name, "not supported")
                }
                "datatype" | "consistent" | "write_once" => {}
                n if INFORMATIONAL.contains(&n) => {}
                _ => {
                    let text = value.to_string();
                    if name.len() > MAX_EXTRA_NAME_BYTES || text.len() > MAX_EXTRA_VALUE_BYTES {
                        bad(name, "too long a property for this server");
                    } else {
                        patch.extra.insert(name.clone(), text);
                    }
                }
            }
        }
        if patch.extra.len() > MAX_EXTRA_PROPS {
            errors.push(PropError {
                prop: "props".into(),
                reason: format!("{} unknown properties; at most {MAX_EXTRA_PROPS}", patch.extra.len()),
            });
        }
        if errors.is_empty() && patch.to_json().to_string().len() > MAX_PROPS_BYTES {
            errors.push(PropError {
                prop: "props".into(),
                reason: format!("more than {MAX_PROPS_BYTES} bytes of properties"),
            });
        }
        if errors.is_empty() { Ok(patch) } else { Err(PropsError(errors)) }
    }

    /// The properties set, as a JSON object [`PropsPatch::from_json`]
    /// takes back (the gossip wire carries them so).
    pub fn to_json(&self) -> Value {
        let mut props = Map::new();
        for (k, v) in &self.extra {
            props.insert(k.clone(), serde_json::from_str(v).unwrap_or(Value::Null));
        }
        let counts = [
            ("n_val", self.n_val.map(u64::from)),
            ("young_vclock", self.young_vclock),
            ("old_vclock", self.old_vclock),
            ("small_vclock", self.small_vclock),
            ("big_vclock", self.big_vclock),
        ];
        for (k, v) in counts {
            if let Some(v) = v {
                props.insert(k.into(), json!(v));
            }
        }
        let bools = [
            ("allow_mult", self.allow_mult),
            ("last_write_wins", self.last_write_wins),
            ("notfound_ok", self.notfound_ok),
            ("basic_quorum", self.basic_quorum),
        ];
        for (k, v) in bools {
            if let Some(v) = v {
                props.insert(k.into(), json!(v));
            }
        }
        let quorums =
            [("r", self.r), ("w", self.w), ("dw", self.dw), ("rw", self.rw), ("pr", self.pr), ("pw", self.pw)];
        for (k, v) in quorums {
            if let Some(v) = v {
                props.insert(k.into(), v.to_json());
            }
        }
        Value::Object(props)
    }

    /// Checks what depends on the cluster: a bucket's keys live on the
    /// first n_val holders of the cluster's preference list, so n_val can
    /// be at most the cluster's N.
    pub fn check_n_val(&self, cluster_n_val: usize) -> Result<(), PropsError> {
        match self.n_val {
            Some(n) if n as usize > cluster_n_val => Err(PropsError::one(
                "n_val",
                format!(
                    "{n} is above the cluster's n_val of {cluster_n_val}: a bucket's keys are kept on the \
                     first n_val of the cluster's {cluster_n_val} replicas, so it cannot have more"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// `self` with every property `newer` sets replaced (Riak's merge of
    /// an update into the existing properties).
    pub fn merged_with(&self, newer: &PropsPatch) -> PropsPatch {
        let mut out = self.clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if newer.$f.is_some() { out.$f = newer.$f; } )* };
        }
        take!(
            n_val,
            allow_mult,
            last_write_wins,
            r,
            w,
            dw,
            rw,
            pr,
            pw,
            notfound_ok,
            basic_quorum,
            young_vclock,
            old_vclock,
            small_vclock,
            big_vclock
        );
        out.extra.extend(newer.extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }

    fn vclock_mut(&mut self, name: &str) -> &mut Option<u64> {
        match name {
            "young_vclock" => &mut self.young_vclock,
            "old_vclock" => &mut self.old_vclock,
            "small_vclock" => &mut self.small_vclock,
            _ => &mut self.big_vclock,
        }
    }

    fn bool_mut(&mut self, name: &str) -> &mut Option<bool> {
        match name {
            "allow_mult" => &mut self.allow_mult,
            "last_write_wins" => &mut self.last_write_wins,
            "notfound_ok" => &mut self.notfound_ok,
            _ => &mut self.basic_quorum,
        }
    }

    fn quorum_mut(&mut self, name: &str) -> &mut Option<QuorumParam> {
        match name {
            "r" => &mut self.r,
            "w" => &mut self.w,
            "rw" => &mut self.rw,
            "dw" => &mut self.dw,
            "pr" => &mut self.pr,
            _ => &mut self.pw,
        }
    }
}

fn positive(value: &Value) -> Option<u64> {
    value.as_u64().filter(|n| *n > 0)
}

/// As `riak_kv_bucket:coerce_bool`: booleans, their names in any case, and
/// integers (positive: true).
fn coerce_bool(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::String(s) if s.eq_ignore_ascii_case("true") => Some(true),
        Value::String(s) if s.eq_ignore_ascii_case("false") => Some(false),
        Value::Number(n) => n.as_i64().map(|i| i > 0),
        _ => None,
    }
}

/// A bucket's properties in effect: defaults, then its type's, then its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketProps {
    pub n_val: usize,
    pub allow_mult: bool,
    pub last_write_wins: bool,
    /// Never `Default` here: resolved to the cluster's R.
    pub r: QuorumParam,
    /// Never `Default` here: resolved to the cluster's W.
    pub w: QuorumParam,
    /// Accepted and shown; a write is durable once a replica acknowledges
    /// it (RocksDB's write-ahead log), so dw counts as w does.
    pub dw: QuorumParam,
    /// Used for the read half of a delete without a context.
    pub rw: QuorumParam,
    pub pr: QuorumParam,
    pub pw: QuorumParam,
    /// A read's default for Riak's notfound_ok (a replica's "not found"
    /// counts towards R) when the request does not say.
    pub notfound_ok: bool,
    /// A read's default for Riak's basic_quorum when the request does not
    /// say.
    pub basic_quorum: bool,
    pub young_vclock: u64,
    pub old_vclock: u64,
    pub small_vclock: u64,
    pub big_vclock: u64,
    pub extra: BTreeMap<String, String>,
}

/// The cluster settings properties default to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterDefaults {
    pub n_val: usize,
    pub r: usize,
    pub w: usize,
}

impl ClusterDefaults {
    /// The cluster's R or W as a property: "quorum" when it is a majority
    /// of N (the usual set-up, and what Riak shows), else the number.
    fn quorum(&self, count: usize) -> QuorumParam {
        if count == self.n_val / 2 + 1 { QuorumParam::Quorum } else { QuorumParam::Count(count as u32) }
    }
}

/// Properties of a bucket of type `type_props` with its own `bucket_props`
/// (either may set nothing): Riak's defaults with the cluster's N, R and W,
/// then the type's, then the bucket's. Our default: allow_mult=true (Riak's
/// default type has false; ours keeps siblings).
pub fn effective(defaults: ClusterDefaults, type_props: &PropsPatch, bucket_props: &PropsPatch) -> BucketProps {
    let p = type_props.merged_with(bucket_props);
    let n_val = p.n_val.map_or(defaults.n_val, |n| n as usize);
    let r = p.r.unwrap_or_default().or(defaults.quorum(defaults.r));
    let w = p.w.unwrap_or_default().or(defaults.quorum(defaults.w));
    BucketProps {
        n_val,
        allow_mult: p.allow_mult.unwrap_or(true),
        last_write_wins: p.last_write_wins.unwrap_or(false),
        r,
        w,
        dw: p.dw.unwrap_or(QuorumParam::Quorum).or(w),
        rw: p.rw.unwrap_or(QuorumParam::Quorum).or(r),
        pr: p.pr.unwrap_or(QuorumParam::Count(0)).or(QuorumParam::Count(0)),
        pw: p.pw.unwrap_or(QuorumParam::Count(0)).or(QuorumParam::Count(0)),
        notfound_ok: p.notfound_ok.unwrap_or(true),
        basic_quorum: p.basic_quorum.unwrap_or(false),
        young_vclock: p.young_vclock.unwrap_or(20),
        old_vclock: p.old_vclock.unwrap_or(86_400),
        small_vclock: p.small_vclock.unwrap_or(50),
        big_vclock: p.big_vclock.unwrap_or(50),
        extra: p.extra,
    }
}

impl BucketProps {
    /// The default type's properties with nothing set.
    pub fn defaults(defaults: ClusterDefaults) -> BucketProps {
        effective(defaults, &PropsPatch::default(), &PropsPatch::default())
    }

    /// The `props` object of `GET .../props`, as Riak shows it: `name` is
    /// the bucket (or the type, for a type's props); `active` and
    /// `claimant` for bucket types other than `default` (`for_type`: the
    /// type, whether active, the claimant's name).
    pub fn to_json(&self, name: &str, for_type: Option<(&str, bool, &str)>) -> Value {
        let mut props = Map::new();
        for (k, v) in &self.extra {
            props.insert(k.clone(), serde_json::from_str(v).unwrap_or(Value::Null));
        }
        let quorums =
            [("r", self.r), ("w", self.w), ("dw", self.dw), ("rw", self.rw), ("pr", self.pr), ("pw", self.pw)];
        for (k, q) in quorums {
            props.insert(k.into(), q.to_json());
        }
        let rest = json!({
            "name": name,
            "n_val": self.n_val,
            "allow_mult": self.allow_mult,
            "last_write_wins": self.last_write_wins,
            "notfound_ok": self.notfound_ok,
            "basic_quorum": self.basic_quorum,
            "young_vclock": self.young_vclock,
            "old_vclock": self.old_vclock,
            "small_vclock": self.small_vclock,
            "big_vclock": self.big_vclock,
            "precommit": [],
            "postcommit": [],
            "chash_keyfun": {"mod": "riak_core_util", "fun": "chash_std_keyfun"},
            "linkfun": {"mod": "riak_kv_wm_link_walker", "fun": "mapreduce_linkfun"},
            // Our objects always carry dotted version vectors.
            "dvv_enabled": true,
        });
        props.extend(rest.as_object().expect("an object").clone());
        if let Some((_, active, claimant)) = for_type {
            props.insert("active".into(), json!(active));
            props.insert("claimant".into(), json!(claimant));
        }
        Value::Object(props)
    }
}

/// One bucket type as the cluster keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeRecord {
    pub props: PropsPatch,
    /// A created type is unusable until activated; activation is for good.
    pub active: bool,
    /// `(version, editor)` of the last edit of `props`.
    pub stamp: (u64, NodeId),
}

/// One bucket's own properties (empty once reset to its type's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketRecord {
    pub props: PropsPatch,
    pub stamp: (u64, NodeId),
}

/// Every bucket type but `default`, and every bucket with its own
/// properties, as gossiped.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Buckets {
    pub types: BTreeMap<String, TypeRecord>,
    /// By (type, bucket) names, raw bytes.
    pub buckets: BTreeMap<(Vec<u8>, Vec<u8>), BucketRecord>,
}

/// Why a request names no usable bucket (HTTP 404, Riak's text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    #[error("Unknown bucket type: {0}")]
    UnknownType(String),
    #[error("Unknown bucket type: {0} (created but not activated; see bucket-type activate)")]
    InactiveType(String),
}

/// Why a bucket type or bucket cannot be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BucketEditError {
    #[error("bucket type {0:?}: use 1 to {MAX_NAME_BYTES} letters, digits, '-', '_' or '.'")]
    BadTypeName(String),
    #[error("bucket name of {0} bytes; at most {MAX_NAME_BYTES}")]
    BadBucketName(usize),
    #[error("bucket type {0} already exists")]
    TypeExists(String),
    #[error("the default bucket type cannot be created or changed")]
    DefaultType,
    #[error("bucket type {0} does not exist")]
    NoSuchType(String),
    #[error("the cluster has {max} bucket types, the most it keeps")]
    TooManyTypes { max: usize },
    #[error("the cluster keeps properties of {max} buckets, the most it can")]
    TooManyBuckets { max: usize },
    #[error("{0}")]
    Props(#[from] PropsError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
}

/// Type names as riak-admin's help suggests, and printable in any output.
pub fn valid_type_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Buckets {
    /// The properties in effect for `bucket` of `bucket_type`.
    pub fn props(
        &self,
        defaults: ClusterDefaults,
        bucket_type: &[u8],
        bucket: &[u8],
    ) -> Result<BucketProps, BucketError> {
        let type_props = self.type_props(bucket_type)?;
        let own = self.buckets.get(&(bucket_type.to_vec(), bucket.to_vec())).map(|b| &b.props);
        Ok(effective(defaults, type_props, own.unwrap_or(&EMPTY)))
    }

    /// A usable type's own properties (`default`: none).
    fn type_props(&self, bucket_type: &[u8]) -> Result<&PropsPatch, BucketError> {
        if bucket_type == DEFAULT_TYPE.as_bytes() {
            return Ok(&EMPTY);
        }
        let name = String::from_utf8_lossy(bucket_type);
        match std::str::from_utf8(bucket_type).ok().and_then(|t| self.types.get(t)) {
            None => Err(BucketError::UnknownType(name.into_owned())),
            Some(t) if !t.active => Err(BucketError::InactiveType(name.into_owned())),
            Some(t) => Ok(&t.props),
        }
    }

    /// A type's properties in effect and whether it is active (`default`
    /// is), even if not active yet (`bucket-type status`).
    pub fn type_status(&self, defaults: ClusterDefaults, name: &str) -> Option<(BucketProps, bool)> {
        if name == DEFAULT_TYPE {
            return Some((BucketProps::defaults(defaults), true));
        }
        let t = self.types.get(name)?;
        Some((effective(defaults, &t.props, &EMPTY), t.active))
    }

    fn next_version(&self) -> u64 {
        let types = self.types.values().map(|t| t.stamp.0);
        types.chain(self.buckets.values().map(|b| b.stamp.0)).max().unwrap_or(0) + 1
    }

    /// Creates an inactive type (riak-admin bucket-type create); creating
    /// an inactive type again replaces its properties, as Riak allows.
    pub fn create_type(
        &mut self,
        editor: &NodeId,
        name: &str,
        props: PropsPatch,
        cluster_n_val: usize,
    ) -> Result<(), BucketEditError> {
        check_type_name(name)?;
        props.check_n_val(cluster_n_val)?;
        match self.types.get(name) {
            Some(t) if t.active => return Err(BucketEditError::TypeExists(name.into())),
            None if self.types.len() >= MAX_TYPES => return Err(BucketEditError::TooManyTypes { max: MAX_TYPES }),
            _ => {}
        }
        let stamp = (self.next_version(), editor.clone());
        self.types.insert(name.into(), TypeRecord { props, active: false, stamp });
        Ok(())
    }

    /// Activates a type; true if it was not active yet.
    pub fn activate_type(&mut self, editor: &NodeId, name: &str) -> Result<bool, BucketEditError> {
        if name == DEFAULT_TYPE {
            return Ok(false);
        }
        let version = self.next_version();
        let t = self.types.get_mut(name).ok_or_else(|| BucketEditError::NoSuchType(name.into()))?;
        if t.active {
            return Ok(false);
        }
        t.active = true;
        t.stamp = (version, editor.clone());
        Ok(true)
    }

    /// Updates a type's properties (riak-admin bucket-type update): those
    /// given replace the type's; n_val cannot change once it is active
    /// (keys already written would be on the wrong replicas), as in Riak.
    pub fn update_type(
        &mut self,
        editor: &NodeId,
        name: &str,
        props: &PropsPatch,
        cluster_n_val: usize,
    ) -> Result<(), BucketEditError> {
        if name == DEFAULT_TYPE {
            return Err(BucketEditError::DefaultType);
        }
        props.check_n_val(cluster_n_val)?;
        let version = self.next_version();
        let t = self.types.get_mut(name).ok_or_else(|| BucketEditError::NoSuchType(name.into()))?;
        // Compared with the n_val in effect: a client that sends back the
        // props it read (the Python client's BucketType.set_properties)
        // sends the cluster's n_val for a type that never set one.
        let in_effect = t.props.n_val.unwrap_or(cluster_n_val as u32);
        if t.active && props.n_val.is_some_and(|n| n != in_effect) {
            return Err(PropsError::one("n_val", "cannot be modified for an existing bucket type").into());
        }
        let merged = t.props.merged_with(props);
        check_size(&merged)?;
        t.props = merged;
        t.stamp = (version, editor.clone());
        Ok(())
    }

    /// Sets properties of one bucket (`PUT .../props`): those given replace
    /// the bucket's own; its type must be usable.
    pub fn set_bucket(
        &mut self,
        editor: &NodeId,
        bucket_type: &[u8],
        bucket: &[u8],
        props: &PropsPatch,
        cluster_n_val: usize,
    ) -> Result<(), BucketEditError> {
        self.type_props(bucket_type)?;
        if bucket.len() > MAX_NAME_BYTES || bucket_type.len() > MAX_NAME_BYTES {
            return Err(BucketEditError::BadBucketName(bucket.len().max(bucket_type.len())));
        }
        props.check_n_val(cluster_n_val)?;
        let key = (bucket_type.to_vec(), bucket.to_vec());
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_BUCKETS {
            return Err(BucketEditError::TooManyBuckets { max: MAX_BUCKETS });
        }
        let merged = self.buckets.get(&key).map_or_else(|| props.clone(), |b| b.props.merged_with(props));
        check_size(&merged)?;
        let stamp = (self.next_version(), editor.clone());
        self.buckets.insert(key, BucketRecord { props: merged, stamp });
        Ok(())
    }

    /// Resets a bucket to its type's properties (`DELETE .../props`). The
    /// record stays, empty, so that a view that missed the reset cannot
    /// bring the old properties back.
    pub fn reset_bucket(&mut self, editor: &NodeId, bucket_type: &[u8], bucket: &[u8]) -> Result<(), BucketEditError> {
        self.type_props(bucket_type)?;
        let key = (bucket_type.to_vec(), bucket.to_vec());
        if let Some(b) = self.buckets.get(&key)
            && b.props != PropsPatch::default()
        {
            let stamp = (self.next_version(), editor.clone());
            self.buckets.insert(key, BucketRecord { props: PropsPatch::default(), stamp });
        }
        Ok(())
    }

    /// Keeps the larger stamp per type and per bucket (a type's `active`
    /// by `or`); true if anything changed. Records beyond the bounds are
    /// not taken (the wire checks them; this keeps a state bounded however
    /// it was built).
    pub fn merge(&mut self, other: &Buckets) -> bool {
        let mut changed = false;
        for (name, theirs) in &other.types {
            let room = self.types.len() < MAX_TYPES;
            match self.types.get_mut(name) {
                Some(ours) => {
                    let mut next = if ours.stamp < theirs.stamp { theirs.clone() } else { ours.clone() };
                    next.active = ours.active || theirs.active;
                    if next != *ours {
                        *ours = next;
                        changed = true;
                    }
                }
                None if room => {
                    self.types.insert(name.clone(), theirs.clone());
                    changed = true;
                }
                None => {}
            }
        }
        for (key, theirs) in &other.buckets {
            match self.buckets.get(key) {
                Some(ours) if ours.stamp >= theirs.stamp => {}
                None if self.buckets.len() >= MAX_BUCKETS => {}
                _ => {
                    self.buckets.insert(key.clone(), theirs.clone());
                    changed = true;
                }
            }
        }
        changed
    }
}

static EMPTY: PropsPatch = PropsPatch {
    n_val: None,
    allow_mult: None,
    last_write_wins: None,
    r: None,
    w: None,
    dw: None,
    rw: None,
    pr: None,
    pw: None,
    notfound_ok: None,
    basic_quorum: None,
    young_vclock: None,
    old_vclock: None,
    small_vclock: None,
    big_vclock: None,
    extra: BTreeMap::new(),
};

/// Merged properties may outgrow the bound each request's stays within.
fn check_size(props: &PropsPatch) -> Result<(), PropsError> {
    if props.to_json().to_string().len() > MAX_PROPS_BYTES || props.extra.len() > MAX_EXTRA_PROPS {
        return Err(PropsError::one("props", format!("more than {MAX_PROPS_BYTES} bytes of properties in all")));
    }
    Ok(())
}

fn check_type_name(name: &str) -> Result<(), BucketEditError> {
    if name == DEFAULT_TYPE {
        return Err(BucketEditError::DefaultType);
    }
    if !valid_type_name(name) {
        return Err(BucketEditError::BadTypeName(name.into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: ClusterDefaults = ClusterDefaults { n_val: 3, r: 2, w: 2 };

    fn node(n: &str) -> NodeId {
        NodeId::new(n)
    }

    fn patch(json: &str) -> PropsPatch {
        PropsPatch::from_body(json.as_bytes()).unwrap()
    }

    fn refused(json: &str) -> Vec<(String, String)> {
        PropsPatch::from_body(json.as_bytes()).unwrap_err().0.into_iter().map(|e| (e.prop, e.reason)).collect()
    }

    #[test]
    fn defaults_are_riaks_but_keep_siblings() {
        let p = BucketProps::defaults(CLUSTER);
        assert_eq!(p.n_val, 3);
        assert!(p.allow_mult, "ours keeps siblings; Riak's default type does not");
        assert_eq!(
            (p.r, p.w, p.dw, p.rw),
            (QuorumParam::Quorum, QuorumParam::Quorum, QuorumParam::Quorum, QuorumParam::Quorum)
        );
        assert_eq!((p.pr, p.pw), (QuorumParam::Count(0), QuorumParam::Count(0)));
        assert!(p.notfound_ok && !p.basic_quorum && !p.last_write_wins);
        let json = p.to_json("b", None);
        assert_eq!(json["r"], "quorum");
        assert_eq!(json["pr"], 0);
        assert_eq!(json["name"], "b");
        assert_eq!(json["precommit"], json!([]));
        assert!(json.get("active").is_none());
        let typed = p.to_json("b", Some(("t", true, "n1")));
        assert_eq!((typed["active"].clone(), typed["claimant"].clone()), (json!(true), json!("n1")));
        // A cluster whose R is not a majority shows its number.
        let odd = BucketProps::defaults(ClusterDefaults { n_val: 3, r: 1, w: 3 });
        assert_eq!((odd.r, odd.w), (QuorumParam::Count(1), QuorumParam::Count(3)));
    }

    #[test]
    fn props_are_validated_as_riak_does() {
        let p = patch(
            r#"{"props":{"n_val":2,"allow_mult":"False","r":"one","w":3,"pw":0,"dw":"all","notfound_ok":1,"custom":{"a":1}}}"#,
        );
        assert_eq!(p.n_val, Some(2));
        assert_eq!(p.allow_mult, Some(false));
        assert_eq!(
            (p.r, p.w, p.pw, p.dw),
            (Some(QuorumParam::One), Some(QuorumParam::Count(3)), Some(QuorumParam::Count(0)), Some(QuorumParam::All))
        );
        assert_eq!(p.notfound_ok, Some(true));
        assert_eq!(p.extra.get("custom").map(String::as_str), Some(r#"{"a":1}"#), "unknown props are kept");
        // Informational ones a client sends back are ignored.
        let back = patch(
            r#"{"props":{"name":"b","type":"t","active":true,"claimant":"x","dvv_enabled":false,"precommit":[],
                "datatype":null,"consistent":false,"write_once":false}}"#,
        );
        assert_eq!(back, PropsPatch::default());
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"n_val":0}"#, "n_val", "not_integer"),
            (r#"{"n_val":"3"}"#, "n_val", "not_integer"),
            (r#"{"n_val":-1}"#, "n_val", "not_integer"),
            (r#"{"allow_mult":"maybe"}"#, "allow_mult", "not_boolean"),
            (r#"{"last_write_wins":null}"#, "last_write_wins", "not_boolean"),
            (r#"{"r":0}"#, "r", "not_valid_quorum"),
            (r#"{"w":"two"}"#, "w", "not_valid_quorum"),
            (r#"{"pr":-1}"#, "pr", "not_valid_quorum"),
            (r#"{"rw":"2"}"#, "rw", "not_valid_quorum"),
            (r#"{"precommit":[{"mod":"m","fun":"f"}]}"#, "precommit", "commit hooks are not supported"),
            (r#"{"datatype":"map"}"#, "datatype", "data types other than counters are not supported"),
            (r#"{"consistent":true}"#, "consistent", "not supported"),
            (r#"{"write_once":true}"#, "write_once", "not supported"),
        ];
        for (props, prop, reason) in cases {
            let body = format!(r#"{{"props":{props}}}"#);
            assert_eq!(refused(&body), vec![((*prop).to_owned(), (*reason).to_owned())], "{body}");
        }
        assert_eq!(refused("nope")[0].0, "body");
        assert_eq!(refused(r#"{"n_val":3}"#)[0].0, "body", "props must be under \"props\"");
        let err = PropsPatch::from_body(br#"{"props":{"n_val":0,"r":"x"}}"#).unwrap_err();
        assert_eq!(err.to_json(), r#"{"n_val":"not_integer","r":"not_valid_quorum"}"#);
        let many: String = (0..=MAX_EXTRA_PROPS).map(|i| format!(r#""x{i}":1"#)).collect::<Vec<_>>().join(",");
        assert_eq!(refused(&format!(r#"{{"props":{{{many}}}}}"#))[0].0, "props");
        assert!(patch(r#"{"props":{"n_val":4}}"#).check_n_val(3).is_err(), "above the cluster's N");
        assert!(patch(r#"{"props":{"n_val":3}}"#).check_n_val(3).is_ok());
    }

    #[test]
    fn types_must_be_created_and_activated_and_buckets_layer_over_them() {
        let mut b = Buckets::default();
        let a = node("a");
        assert_eq!(b.props(CLUSTER, b"nope", b"x"), Err(BucketError::UnknownType("nope".into())));
        b.create_type(&a, "t1", patch(r#"{"props":{"n_val":1,"allow_mult":false}}"#), 3).unwrap();
        assert_eq!(b.props(CLUSTER, b"t1", b"x"), Err(BucketError::InactiveType("t1".into())));
        assert!(b.activate_type(&a, "t1").unwrap());
        assert!(!b.activate_type(&a, "t1").unwrap(), "already active");
        let p = b.props(CLUSTER, b"t1", b"x").unwrap();
        assert_eq!((p.n_val, p.allow_mult), (1, false));
        assert_eq!(p.r, QuorumParam::Quorum);
        b.set_bucket(&a, b"t1", b"x", &patch(r#"{"props":{"allow_mult":true,"r":1}}"#), 3).unwrap();
        let p = b.props(CLUSTER, b"t1", b"x").unwrap();
        assert_eq!((p.n_val, p.allow_mult, p.r), (1, true, QuorumParam::Count(1)));
        assert!(!b.props(CLUSTER, b"t1", b"y").unwrap().allow_mult, "other buckets keep the type's");
        b.reset_bucket(&a, b"t1", b"x").unwrap();
        assert!(!b.props(CLUSTER, b"t1", b"x").unwrap().allow_mult, "reset to the type's");
        // Type edits.
        assert_eq!(b.create_type(&a, "t1", PropsPatch::default(), 3), Err(BucketEditError::TypeExists("t1".into())));
        assert!(matches!(
            b.update_type(&a, "t1", &patch(r#"{"props":{"n_val":2}}"#), 3),
            Err(BucketEditError::Props(_))
        ));
        b.update_type(&a, "t1", &patch(r#"{"props":{"n_val":1,"w":"all"}}"#), 3).unwrap();
        assert_eq!(b.props(CLUSTER, b"t1", b"y").unwrap().w, QuorumParam::All);
        assert_eq!(b.create_type(&a, "default", PropsPatch::default(), 3), Err(BucketEditError::DefaultType));
        assert!(matches!(b.create_type(&a, "a b", PropsPatch::default(), 3), Err(BucketEditError::BadTypeName(_))));
        assert!(matches!(
            b.create_type(&a, "big", patch(r#"{"props":{"n_val":4}}"#), 3),
            Err(BucketEditError::Props(_))
        ));
        // An active type's n_val as read back (the cluster's, never set) is
        // no change.
        b.create_type(&a, "t4", PropsPatch::default(), 3).unwrap();
        b.activate_type(&a, "t4").unwrap();
        b.update_type(&a, "t4", &patch(r#"{"props":{"n_val":3,"allow_mult":false}}"#), 3).unwrap();
        assert!(b.update_type(&a, "t4", &patch(r#"{"props":{"n_val":2}}"#), 3).is_err());
        // An inactive type can still change n_val (it holds no keys yet).
        b.create_type(&a, "t2", patch(r#"{"props":{"n_val":1}}"#), 3).unwrap();
        b.update_type(&a, "t2", &patch(r#"{"props":{"n_val":2}}"#), 3).unwrap();
        assert_eq!(b.type_status(CLUSTER, "t2").map(|(p, active)| (p.n_val, active)), Some((2, false)));
        // The default type always exists and buckets of it may have props.
        b.set_bucket(&a, b"default", b"\xff", &patch(r#"{"props":{"n_val":2}}"#), 3).unwrap();
        assert_eq!(b.props(CLUSTER, b"default", b"\xff").unwrap().n_val, 2);
        assert!(matches!(b.set_bucket(&a, b"t9", b"x", &PropsPatch::default(), 3), Err(BucketEditError::Bucket(_))));
        assert!(matches!(
            b.set_bucket(&a, b"default", &[b'x'; 256], &PropsPatch::default(), 3),
            Err(BucketEditError::BadBucketName(256))
        ));
    }

    #[test]
    fn a_reset_is_not_undone_by_a_stale_view_and_activation_sticks() {
        let mut one = Buckets::default();
        one.set_bucket(&node("a"), b"default", b"x", &patch(r#"{"props":{"n_val":1}}"#), 3).unwrap();
        let stale = one.clone();
        one.reset_bucket(&node("a"), b"default", b"x").unwrap();
        assert!(!one.merge(&stale));
        assert_eq!(one.props(CLUSTER, b"default", b"x").unwrap().n_val, 3);
        // Activation on one node and an edit on another: both kept.
        let mut base = Buckets::default();
        base.create_type(&node("a"), "t", PropsPatch::default(), 3).unwrap();
        let (mut x, mut y) = (base.clone(), base.clone());
        x.activate_type(&node("a"), "t").unwrap();
        y.update_type(&node("b"), "t", &patch(r#"{"props":{"r":1}}"#), 3).unwrap();
        let mut xy = x.clone();
        xy.merge(&y);
        let mut yx = y.clone();
        yx.merge(&x);
        assert_eq!(xy, yx);
        assert!(xy.types["t"].active);
    }

    mod merge {
        use super::*;
        use proptest::prelude::*;

        fn arb_views() -> impl Strategy<Value = Vec<Buckets>> {
            proptest::collection::vec((0usize..3, 0u8..6, 0u8..3, 0u8..3), 0..40).prop_map(|ops| {
                let mut views = vec![Buckets::default(); 3];
                for (view, op, which, value) in ops {
                    let editor = node(["a", "b", "c"][view]);
                    let name = format!("t{which}");
                    let v = &mut views[view];
                    let props = PropsPatch { n_val: Some(u32::from(value) + 1), ..PropsPatch::default() };
                    let _ = match op {
                        0 => v.create_type(&editor, &name, props, 3),
                        1 => v.activate_type(&editor, &name).map(drop),
                        2 => v.update_type(
                            &editor,
                            &name,
                            &PropsPatch { r: Some(QuorumParam::Count(value.into())), ..PropsPatch::default() },
                            3,
                        ),
                        3 => v.set_bucket(&editor, b"default", &[which], &props, 3),
                        4 => v.reset_bucket(&editor, b"default", &[which]),
                        _ => {
                            let other = views[(view + 1) % 3].clone();
                            views[view].merge(&other);
                            Ok(())
                        }
                    };
                }
                views
            })
        }

        fn merged(a: &Buckets, b: &Buckets) -> Buckets {
            let mut out = a.clone();
            out.merge(b);
            out
        }

        fn arb_value() -> impl Strategy<Value = Value> {
            prop_oneof![
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                (0u64..5).prop_map(Value::from),
                proptest::sample::select(vec!["one", "quorum", "all", "default", "true", "False", "x", "2", ""])
                    .prop_map(Value::from),
                Just(Value::Null),
                Just(json!([])),
                Just(json!({"a": [1, "b"]})),
            ]
        }

        fn arb_props() -> impl Strategy<Value = Map<String, Value>> {
            let names = proptest::sample::select(vec![
                "n_val",
                "allow_mult",
                "last_write_wins",
                "r",
                "w",
                "dw",
                "rw",
                "pr",
                "pw",
                "notfound_ok",
                "basic_quorum",
                "young_vclock",
                "big_vclock",
                "precommit",
                "name",
                "custom",
                "other",
            ]);
            proptest::collection::btree_map(names, arb_value(), 0..8)
                .prop_map(|m| m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
        }

        proptest! {
            /// What parses comes back unchanged through the JSON the gossip
            /// wire carries; what does not names every bad property.
            #[test]
            fn props_round_trip_through_their_json(props in arb_props()) {
                match PropsPatch::from_json(&props) {
                    Ok(patch) => {
                        let back = patch.to_json();
                        prop_assert_eq!(PropsPatch::from_json(back.as_object().unwrap()), Ok(patch));
                    }
                    Err(PropsError(errors)) => {
                        prop_assert!(!errors.is_empty());
                        for e in errors {
                            prop_assert!(props.contains_key(&e.prop), "{} not in the input", e.prop);
                        }
                    }
                }
            }

            #[test]
            fn any_body_is_parsed_or_refused(body in proptest::collection::vec(any::<u8>(), 0..64)) {
                let _ = PropsPatch::from_body(&body);
            }

            #[test]
            fn merge_is_a_semilattice_join(v in arb_views()) {
                let (a, b, c) = (&v[0], &v[1], &v[2]);
                prop_assert_eq!(merged(a, b), merged(b, a));
                prop_assert_eq!(merged(&merged(a, b), c), merged(a, &merged(b, c)));
                prop_assert_eq!(merged(a, a), a.clone());
            }
        }
    }
}
