//! Client authentication and authorisation as values: bearer tokens, their
//! grants, how two views of them merge, and whether a request may proceed.
//!
//! With security on (`--security`, fixed when the cluster is created), every
//! HTTP request but `/ping` (and `/metrics`, which has its own token) carries
//! `Authorization: Bearer TOKEN`. A token is a random 256-bit value shown
//! once when it is created (`vc1_` and 43 base64url characters); the cluster
//! keeps only its SHA-256, in a [`TokenRecord`] gossiped with the rest of the
//! cluster state. A plain (unsalted, fast) hash is enough here: it protects
//! secrets of 256 random bits, which no dictionary or brute force reaches,
//! unlike passwords, which would need a slow salted hash.
//!
//! A record grants permissions ([`Permission`]) on a [`Scope`]: every bucket
//! (`*`), a bucket type (`TYPE`), or one bucket (`TYPE/BUCKET`), in the
//! spirit of Riak security's grants. [`authorize`] decides: a request without
//! a usable credential (missing, malformed, unknown, expired, revoked) is
//! refused as unauthenticated (HTTP 401), one whose token lacks the grant as
//! forbidden (403).
//!
//! Merging: records are last-writer-wins registers per name, stamped
//! `(version, editor)` where the version is a Lamport clock over all the
//! records; a revoked record beats any record that is not, so a revocation
//! can never be undone by a concurrent or stale edit, and it is kept (not
//! deleted) so that gossip from a node that missed it cannot bring the token
//! back. Merging keeps the larger `(revoked, stamp)` per name: a join of a
//! semilattice, so any gossip order converges.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::key::NodeId;

/// The most token records a cluster keeps, revoked ones included (they are
/// kept so that a revocation cannot be undone); a creation beyond it is
/// refused. Bounds the gossiped state (`rpc::membership::largest_state_bytes`).
pub const MAX_TOKENS: usize = 1024;
/// The most grants one token has.
pub const MAX_GRANTS: usize = 16;
/// A token's name: letters, digits, `-`, `_` and `.`, at most this long.
pub const MAX_TOKEN_NAME_BYTES: usize = 64;
/// A scope as written (`TYPE/BUCKET`), at most this long.
pub const MAX_SCOPE_BYTES: usize = 256;
/// The longest `Authorization` header value parsed; anything longer is
/// refused as malformed without being looked at further.
pub const MAX_AUTHORIZATION_BYTES: usize = 1024;
/// The prefix of every token this release creates; it names the format.
pub const TOKEN_PREFIX: &str = "vc1_";
/// Random bytes in a token.
pub const TOKEN_RANDOM_BYTES: usize = 32;
/// The name of the first admin token, made with a cluster with security on.
pub const ADMIN_TOKEN_NAME: &str = "admin";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// GET and HEAD of a key.
    Read,
    /// PUT and POST of a key.
    Write,
    /// DELETE of a key.
    Delete,
    /// Listing the keys of a bucket (asked on the bucket), and the buckets
    /// of a type (asked on the type: `Resource::Type`).
    List,
    /// Every `/admin/*` route (cluster changes, claims, tokens, status).
    /// Granted on `*` only: the cluster is not a bucket.
    Admin,
}

impl Permission {
    pub const ALL: [Permission; 5] =
        [Permission::Read, Permission::Write, Permission::Delete, Permission::List, Permission::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Delete => "delete",
            Permission::List => "list",
            Permission::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Permission> {
        Permission::ALL.into_iter().find(|p| p.name() == name)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Scope {
    /// `*`: every bucket, and the cluster (admin).
    Any,
    /// `TYPE`: every bucket of one bucket type.
    Type(String),
    /// `TYPE/BUCKET`: one bucket.
    Bucket(String, String),
}

impl Scope {
    /// `*`, `TYPE` or `TYPE/BUCKET`; names are non-empty, without `/` or
    /// `*`, and the whole at most [`MAX_SCOPE_BYTES`].
    pub fn parse(text: &str) -> Result<Scope, String> {
        if text.len() > MAX_SCOPE_BYTES {
            return Err(format!("a scope of {} bytes; at most {MAX_SCOPE_BYTES}", text.len()));
        }
        if text == "*" {
            return Ok(Scope::Any);
        }
        let name = |part: &str| {
            if part.is_empty() || part.contains('*') || part.chars().any(char::is_control) {
                Err(format!("scope {text:?}: expected *, TYPE or TYPE/BUCKET"))
            } else {
                Ok(part.to_owned())
            }
        };
        match text.split_once('/') {
            None => Ok(Scope::Type(name(text)?)),
            Some((t, b)) if !b.contains('/') => Ok(Scope::Bucket(name(t)?, name(b)?)),
            Some(_) => Err(format!("scope {text:?}: expected *, TYPE or TYPE/BUCKET")),
        }
    }

    fn covers(&self, resource: &Resource<'_>) -> bool {
        match (self, resource) {
            (Scope::Any, _) => true,
            (_, Resource::Cluster) => false,
            (Scope::Type(t), Resource::Bucket { bucket_type, .. } | Resource::Type { bucket_type }) => {
                t.as_bytes() == *bucket_type
            }
            (Scope::Bucket(..), Resource::Type { .. }) => false,
            (Scope::Bucket(t, b), Resource::Bucket { bucket_type, bucket }) => {
                t.as_bytes() == *bucket_type && b.as_bytes() == *bucket
            }
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Any => f.write_str("*"),
            Scope::Type(t) => f.write_str(t),
            Scope::Bucket(t, b) => write!(f, "{t}/{b}"),
        }
    }
}

/// What a request touches: one bucket, or the cluster itself (admin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Cluster,
    /// A whole bucket type: listing its buckets. Granted by `TYPE` or `*`,
    /// never by one of its buckets.
    Type {
        bucket_type: &'a [u8],
    },
    Bucket {
        bucket_type: &'a [u8],
        bucket: &'a [u8],
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub permissions: BTreeSet<Permission>,
    pub scope: Scope,
}

impl Grant {
    /// A grant from its parts as a client writes them; admin only on `*`.
    pub fn parse<'a>(permissions: impl IntoIterator<Item = &'a str>, scope: &str) -> Result<Grant, String> {
        let scope = Scope::parse(scope)?;
        let mut set = BTreeSet::new();
        for name in permissions {
            let p = Permission::parse(name)
                .ok_or_else(|| format!("unknown permission {name:?}; expected read, write, delete, list or admin"))?;
            set.insert(p);
        }
        let grant = Grant { permissions: set, scope };
        grant.check()?;
        Ok(grant)
    }

    /// `PERMS:SCOPE`, as the admin CLI takes it: `read,write:default/photos`.
    pub fn parse_short(text: &str) -> Result<Grant, String> {
        let (permissions, scope) =
            text.split_once(':').ok_or_else(|| format!("grant {text:?}: expected PERMS:SCOPE, e.g. read,write:*"))?;
        Grant::parse(permissions.split(',').map(str::trim), scope)
    }

    fn check(&self) -> Result<(), String> {
        if self.permissions.is_empty() {
            return Err(format!("a grant on {} without any permission", self.scope));
        }
        if self.permissions.contains(&Permission::Admin) && self.scope != Scope::Any {
            return Err(format!("admin is granted on * only, not on {}", self.scope));
        }
        Ok(())
    }
}

/// One token as the cluster keeps it: never the token, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub name: String,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    pub grants: Vec<Grant>,
    /// On the clock of the node that created it; `None`: never expires.
    pub expires_at_ms: Option<u64>,
    /// Kept once revoked, so the revocation spreads and sticks.
    pub revoked: bool,
    /// `(version, editor)`: a Lamport clock over the records, and the node
    /// that made this edit.
    pub stamp: (u64, NodeId),
}

impl TokenRecord {
    fn rank(&self) -> (bool, u64, &NodeId) {
        (self.revoked, self.stamp.0, &self.stamp.1)
    }

    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// Every token record, by name.
pub type Tokens = BTreeMap<String, TokenRecord>;

/// Keeps, per name, the record with the larger `(revoked, stamp)`; true if
/// anything changed.
pub fn merge(ours: &mut Tokens, theirs: &Tokens) -> bool {
    let mut changed = false;
    for (name, record) in theirs {
        if ours.get(name).is_none_or(|mine| mine.rank() < record.rank()) {
            ours.insert(name.clone(), record.clone());
            changed = true;
        }
    }
    changed
}

/// Why a token cannot be created or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token name {0:?}: use 1 to {MAX_TOKEN_NAME_BYTES} letters, digits, '-', '_' or '.'")]
    BadName(String),
    #[error("{0}")]
    BadGrant(String),
    #[error("a token has at most {MAX_GRANTS} grants, not {0}")]
    TooManyGrants(usize),
    #[error("a token named {0:?} exists already; revoke it or choose another name")]
    Exists(String),
    #[error("the token named {0:?} was revoked; a revoked name is never reused, choose another")]
    Revoked(String),
    #[error("no token is named {0:?}")]
    Unknown(String),
    #[error("the cluster has {MAX_TOKENS} tokens (revoked ones count), the most it keeps")]
    TooMany,
}

/// A token name: 1 to [`MAX_TOKEN_NAME_BYTES`] letters, digits, `-`, `_`, `.`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOKEN_NAME_BYTES
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

fn check_name(name: &str) -> Result<(), TokenError> {
    if valid_name(name) { Ok(()) } else { Err(TokenError::BadName(name.to_owned())) }
}

fn check_grants(grants: &[Grant]) -> Result<(), TokenError> {
    if grants.len() > MAX_GRANTS {
        return Err(TokenError::TooManyGrants(grants.len()));
    }
    grants.iter().try_for_each(|g| g.check().map_err(TokenError::BadGrant))
}

/// A version above every record's.
fn next_version(tokens: &Tokens) -> u64 {
    tokens.values().map(|r| r.stamp.0).max().unwrap_or(0) + 1
}

/// Adds a token record, as `editor`.
pub fn create(
    tokens: &mut Tokens,
    editor: &NodeId,
    name: &str,
    hash: [u8; 32],
    grants: Vec<Grant>,
    expires_at_ms: Option<u64>,
) -> Result<(), TokenError> {
    check_name(name)?;
    check_grants(&grants)?;
    match tokens.get(name) {
        Some(r) if r.revoked => return Err(TokenError::Revoked(name.to_owned())),
        Some(_) => return Err(TokenError::Exists(name.to_owned())),
        None if tokens.len() >= MAX_TOKENS => return Err(TokenError::TooMany),
        None => {}
    }
    let stamp = (next_version(tokens), editor.clone());
    let record = TokenRecord { name: name.to_owned(), hash, grants, expires_at_ms, revoked: false, stamp };
    tokens.insert(name.to_owned(), record);
    Ok(())
}

/// Revokes a token, as `editor`; revoking it again changes nothing.
pub fn revoke(tokens: &mut Tokens, editor: &NodeId, name: &str) -> Result<bool, TokenError> {
    let version = next_version(tokens);
    let record = tokens.get_mut(name).ok_or_else(|| TokenError::Unknown(name.to_owned()))?;
    if record.revoked {
        return Ok(false);
    }
    record.revoked = true;
    record.stamp = (version, editor.clone());
    Ok(true)
}

/// Replaces a token's grants, as `editor`.
pub fn set_grants(tokens: &mut Tokens, editor: &NodeId, name: &str, grants: Vec<Grant>) -> Result<(), TokenError> {
    check_grants(&grants)?;
    let version = next_version(tokens);
    let record = tokens.get_mut(name).ok_or_else(|| TokenError::Unknown(name.to_owned()))?;
    if record.revoked {
        return Err(TokenError::Revoked(name.to_owned()));
    }
    record.grants = grants;
    record.stamp = (version, editor.clone());
    Ok(())
}

/// A new token from `random` (the caller's entropy): shown once, never stored.
pub fn new_token(random: [u8; TOKEN_RANDOM_BYTES]) -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(random))
}

/// What the cluster stores of a token.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("authentication required: send Authorization: Bearer TOKEN")]
    Missing,
    #[error("malformed Authorization header: {0}")]
    Malformed(&'static str),
    #[error("unknown token")]
    Unknown,
    #[error("token {0:?} has expired")]
    Expired(String),
    #[error("token {0:?} was revoked")]
    Revoked(String),
    #[error("token {name:?} has no {permission} grant on {on}")]
    NotGranted { name: String, permission: Permission, on: String },
}

impl Refusal {
    /// Unauthenticated (401: no usable credential) rather than forbidden
    /// (403: a valid token without the grant).
    pub fn unauthenticated(&self) -> bool {
        !matches!(self, Refusal::NotGranted { .. })
    }

    /// The metric label (`vinzclortho_http_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed(_) => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Expired(_) => "expired",
            Refusal::Revoked(_) => "revoked",
            Refusal::NotGranted { .. } => "forbidden",
        }
    }

    /// Every reason label, for metrics registered at 0.
    pub const REASONS: [&'static str; 6] = ["missing", "malformed", "unknown", "expired", "revoked", "forbidden"];
}

/// The hash of the token an `Authorization` header value presents. The
/// value is capped at [`MAX_AUTHORIZATION_BYTES`]; the scheme is `Bearer`
/// (any case, RFC 7235), the token visible ASCII.
pub fn presented(header: Option<&[u8]>) -> Result<[u8; 32], Refusal> {
    let value = header.ok_or(Refusal::Missing)?;
    if value.len() > MAX_AUTHORIZATION_BYTES {
        return Err(Refusal::Malformed("longer than 1024 bytes"));
    }
    let text = std::str::from_utf8(value).map_err(|_| Refusal::Malformed("not ASCII"))?;
    let (scheme, token) = text.trim().split_once(' ').ok_or(Refusal::Malformed("expected Bearer TOKEN"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refusal::Malformed("expected Bearer TOKEN"));
    }
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Refusal::Malformed("the token is not one word of visible ASCII"));
    }
    Ok(token_hash(token))
}

/// May the holder of the token hashed `presented` do `permission` on
/// `resource` at `now_ms`? The token's name if so. (Hashes are compared as
/// they are: timing could at most reveal a hash, which is no secret worth
/// having, since it cannot be turned back into a token.)
pub fn authorize(
    tokens: &Tokens,
    presented: &[u8; 32],
    now_ms: u64,
    permission: Permission,
    resource: Resource<'_>,
) -> Result<String, Refusal> {
    let record = tokens.values().find(|r| r.hash == *presented).ok_or(Refusal::Unknown)?;
    if record.revoked {
        return Err(Refusal::Revoked(record.name.clone()));
    }
    if record.expired(now_ms) {
        return Err(Refusal::Expired(record.name.clone()));
    }
    if record.grants.iter().any(|g| g.permissions.contains(&permission) && g.scope.covers(&resource)) {
        return Ok(record.name.clone());
    }
    let on = match resource {
        Resource::Cluster => "the cluster (grant it on *)".to_owned(),
        Resource::Type { bucket_type } => {
            format!("bucket type {} (grant it on the type or *)", String::from_utf8_lossy(bucket_type))
        }
        Resource::Bucket { bucket_type, bucket } => {
            format!("{}/{}", String::from_utf8_lossy(bucket_type), String::from_utf8_lossy(bucket))
        }
    };
    Err(Refusal::NotGranted { name: record.name.clone(), permission, on })
}

/// The grant of the first admin token: everything, everywhere.
pub fn admin_grants() -> Vec<Grant> {
    vec![Grant { permissions: Permission::ALL.into_iter().collect(), scope: Scope::Any }]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: &str) -> NodeId {
        NodeId::new(n)
    }

    fn bucket<'a>(t: &'a str, b: &'a str) -> Resource<'a> {
        Resource::Bucket { bucket_type: t.as_bytes(), bucket: b.as_bytes() }
    }

    fn grant(text: &str) -> Grant {
        Grant::parse_short(text).unwrap()
    }

    fn with(name: &str, token: &str, grants: &[&str], expires: Option<u64>) -> Tokens {
        let mut t = Tokens::new();
        create(&mut t, &node("a"), name, token_hash(token), grants.iter().map(|g| grant(g)).collect(), expires)
            .unwrap();
        t
    }

    #[test]
    fn tokens_are_random_base64url_with_a_prefix_and_only_their_hash_is_kept() {
        let token = new_token([7; 32]);
        assert!(token.starts_with("vc1_"));
        assert_eq!(token.len(), 4 + 43);
        assert_ne!(new_token([8; 32]), token);
        let t = with("t", &token, &["read:*"], None);
        assert!(!format!("{t:?}").contains(&token[4..]));
        assert_eq!(t["t"].hash, token_hash(&token));
    }

    #[test]
    fn scopes_and_grants_parse_and_bad_ones_are_refused() {
        assert_eq!(Scope::parse("*").unwrap(), Scope::Any);
        assert_eq!(Scope::parse("maps").unwrap(), Scope::Type("maps".into()));
        assert_eq!(Scope::parse("default/photos").unwrap(), Scope::Bucket("default".into(), "photos".into()));
        for bad in ["", "a/", "/b", "a/b/c", "a*", &"x".repeat(MAX_SCOPE_BYTES + 1)] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(grant("read,write:default/photos").permissions.len(), 2);
        for bad in ["read", "reed:*", ":*", "admin:default", "admin,read:t/b"] {
            assert!(Grant::parse_short(bad).is_err(), "{bad:?}");
        }
        assert_eq!(grant("admin:*").scope.to_string(), "*");
    }

    #[test]
    fn authorize_checks_the_token_then_the_grant() {
        let t = with("photos", "tok", &["read,write:default/photos", "list:maps"], None);
        let ok = |p, r| authorize(&t, &token_hash("tok"), 0, p, r);
        assert_eq!(ok(Permission::Read, bucket("default", "photos")).unwrap(), "photos");
        assert_eq!(ok(Permission::Write, bucket("default", "photos")).unwrap(), "photos");
        assert_eq!(ok(Permission::List, bucket("maps", "anything")).unwrap(), "photos");
        let refused = ok(Permission::Delete, bucket("default", "photos")).unwrap_err();
        assert!(!refused.unauthenticated() && refused.reason() == "forbidden", "{refused}");
        assert!(ok(Permission::Read, bucket("default", "other")).is_err());
        assert!(ok(Permission::Read, bucket("maps", "x")).is_err());
        assert!(ok(Permission::Admin, Resource::Cluster).is_err());
        let unknown = authorize(&t, &token_hash("nope"), 0, Permission::Read, bucket("default", "photos"));
        assert_eq!(unknown.unwrap_err(), Refusal::Unknown);

        let admin = with("admin", "root", &["admin,read,write,delete,list:*"], None);
        assert!(authorize(&admin, &token_hash("root"), 0, Permission::Admin, Resource::Cluster).is_ok());
        assert!(authorize(&admin, &token_hash("root"), 0, Permission::List, bucket("x", "y")).is_ok());
    }

    #[test]
    fn a_type_is_granted_by_its_type_scope_or_any_never_by_a_bucket_scope() {
        let t = with("lister", "tok", &["list:maps", "list:default/photos"], None);
        let ok = |r| authorize(&t, &token_hash("tok"), 0, Permission::List, r);
        assert!(ok(Resource::Type { bucket_type: b"maps" }).is_ok());
        let refused = ok(Resource::Type { bucket_type: b"default" }).unwrap_err();
        assert!(refused.to_string().contains("bucket type default"), "{refused}");
        assert!(ok(Resource::Type { bucket_type: b"map" }).is_err());
        let any = with("all", "root", &["list:*"], None);
        assert!(
            authorize(&any, &token_hash("root"), 0, Permission::List, Resource::Type { bucket_type: b"x" }).is_ok()
        );
    }

    #[test]
    fn expired_and_revoked_tokens_are_unauthenticated() {
        let mut t = with("temp", "tok", &["read:*"], Some(1000));
        let at = |t: &Tokens, now| authorize(t, &token_hash("tok"), now, Permission::Read, bucket("d", "d"));
        assert!(at(&t, 999).is_ok());
        let expired = at(&t, 1000).unwrap_err();
        assert!(expired.unauthenticated() && expired.reason() == "expired");
        assert!(revoke(&mut t, &node("b"), "temp").unwrap());
        assert!(!revoke(&mut t, &node("b"), "temp").unwrap(), "twice is once");
        let revoked = at(&t, 0).unwrap_err();
        assert!(revoked.unauthenticated() && revoked.reason() == "revoked");
        assert_eq!(
            set_grants(&mut t, &node("a"), "temp", vec![grant("read:*")]),
            Err(TokenError::Revoked("temp".into()))
        );
        let again = create(&mut t, &node("a"), "temp", token_hash("new"), vec![], None);
        assert_eq!(again, Err(TokenError::Revoked("temp".into())));
    }

    #[test]
    fn creation_checks_names_grants_and_the_cap() {
        let mut t = Tokens::new();
        let a = node("a");
        for bad in ["", "has space", "slash/", &"n".repeat(MAX_TOKEN_NAME_BYTES + 1)] {
            assert!(matches!(create(&mut t, &a, bad, [0; 32], vec![], None), Err(TokenError::BadName(_))), "{bad:?}");
        }
        let many = vec![grant("read:*"); MAX_GRANTS + 1];
        assert_eq!(create(&mut t, &a, "x", [0; 32], many, None), Err(TokenError::TooManyGrants(MAX_GRANTS + 1)));
        create(&mut t, &a, "x", [0; 32], vec![], None).unwrap();
        assert_eq!(create(&mut t, &a, "x", [1; 32], vec![], None), Err(TokenError::Exists("x".into())));
        for i in 1..MAX_TOKENS {
            create(&mut t, &a, &format!("t{i}"), [0; 32], vec![], None).unwrap();
        }
        assert_eq!(create(&mut t, &a, "last", [0; 32], vec![], None), Err(TokenError::TooMany));
        assert_eq!(set_grants(&mut t, &a, "zz", vec![]), Err(TokenError::Unknown("zz".into())));
    }

    #[test]
    fn bearer_headers_are_parsed_strictly_and_bounded() {
        assert_eq!(presented(Some(b"Bearer abc")).unwrap(), token_hash("abc"));
        assert_eq!(presented(Some(b"bearer  abc ")).unwrap(), token_hash("abc"));
        assert_eq!(presented(None), Err(Refusal::Missing));
        for bad in [&b"abc"[..], b"Basic abc", b"Bearer ", b"Bearer a b", b"Bearer \xff\xfe", b"Token abc"] {
            let refused = presented(Some(bad)).unwrap_err();
            assert_eq!(refused.reason(), "malformed", "{bad:?}");
        }
        let huge = format!("Bearer {}", "a".repeat(MAX_AUTHORIZATION_BYTES));
        assert_eq!(presented(Some(huge.as_bytes())).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn a_revocation_beats_a_concurrent_regrant_in_either_order() {
        let base = with("t", "tok", &["read:*"], None);
        let (mut x, mut y) = (base.clone(), base);
        revoke(&mut x, &node("a"), "t").unwrap();
        set_grants(&mut y, &node("b"), "t", vec![grant("write:*")]).unwrap();
        set_grants(&mut y, &node("b"), "t", vec![grant("delete:*")]).unwrap();
        let (mut xy, mut yx) = (x.clone(), y.clone());
        merge(&mut xy, &y);
        merge(&mut yx, &x);
        assert_eq!(xy, yx);
        assert!(xy["t"].revoked);
    }

    use proptest::prelude::*;

    /// Random views of one token set: creations, revocations, regrants and
    /// merges, by three editors.
    fn arb_views() -> impl Strategy<Value = Vec<Tokens>> {
        proptest::collection::vec((0usize..3, 0u8..4, 0u8..4), 0..40).prop_map(|ops| {
            let mut views = vec![Tokens::new(), Tokens::new(), Tokens::new()];
            let editors = [node("a"), node("b"), node("c")];
            for (i, op, which) in ops {
                let name = format!("t{which}");
                let perms = ["read:*", "write:d", "delete:d/b", "admin:*"][which as usize];
                match op {
                    0 => {
                        // Names are unique per editor, as a real cluster's
                        // names are once gossiped: the same name made on two
                        // nodes at once is the one race the stamps settle.
                        let _ = create(&mut views[i], &editors[i], &name, [which; 32], vec![grant(perms)], None);
                    }
                    1 => {
                        let _ = revoke(&mut views[i], &editors[i], &name);
                    }
                    2 => {
                        let _ = set_grants(&mut views[i], &editors[i], &name, vec![grant(perms)]);
                    }
                    _ => {
                        let other = views[(i + 1) % 3].clone();
                        merge(&mut views[i], &other);
                    }
                }
            }
            views
        })
    }

    fn merged(a: &Tokens, b: &Tokens) -> Tokens {
        let mut m = a.clone();
        merge(&mut m, b);
        m
    }

    proptest! {
        #[test]
        fn merge_is_a_semilattice_join(v in arb_views()) {
            prop_assert_eq!(merged(&v[0], &v[1]), merged(&v[1], &v[0]));
            prop_assert_eq!(merged(&merged(&v[0], &v[1]), &v[2]), merged(&v[0], &merged(&v[1], &v[2])));
            prop_assert_eq!(merged(&v[0], &v[0]), v[0].clone());
        }

        #[test]
        fn a_revoked_token_stays_revoked_through_any_merge(v in arb_views()) {
            let all = merged(&merged(&v[0], &v[1]), &v[2]);
            for view in &v {
                for (name, record) in view {
                    if record.revoked {
                        prop_assert!(all[name].revoked);
                    }
                }
            }
        }

        #[test]
        fn authorize_never_admits_an_unknown_revoked_or_ungranted_token(
            v in arb_views(), which in 0u8..4, p in 0usize..5, now in 0u64..10,
        ) {
            let all = merged(&merged(&v[0], &v[1]), &v[2]);
            let permission = Permission::ALL[p];
            let resource = if permission == Permission::Admin { Resource::Cluster } else { bucket("d", "b") };
            if let Ok(name) = authorize(&all, &[which; 32], now, permission, resource) {
                let record = &all[&name];
                prop_assert!(!record.revoked && record.hash == [which; 32]);
                prop_assert!(record.grants.iter().any(|g| g.permissions.contains(&permission)));
            }
        }
    }
}
