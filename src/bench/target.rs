//! The systems a run can drive, behind one `call`: Vinz Clortho's `/store`
//! REST API, etcd's v3 JSON gateway, Garage's K2V API (signed with AWS
//! SigV4, [`super::k2v`]) and Redis over RESP. The same workload, histograms
//! and checks apply to each, so their numbers compare.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Serialize;

use super::k2v::{Call, K2v, ReadAnswer};
use super::redis::RedisConn;
use super::request::{Failure, Reply, Request};
use super::workload::Op;
use crate::core::key::ObjectKey;
use crate::core::ring::partition_of;
use crate::http_client::{ClientTls, Connector};

const CONTEXT_HEADER: &str = "x-vinzclortho-context";
/// On a node's 503: it is shutting down and did nothing with the request
/// (the node's `api::drain`).
const SHUTTING_DOWN_HEADER: &str = "x-vinzclortho-shutting-down";
/// Key bytes sent as they are in a `/store/{key}` path.
const KEY_SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// Vinz Clortho's /store/{key} REST API.
    Vinz,
    /// etcd v3 through its JSON gateway (/v3/kv/put, /v3/kv/range).
    Etcd,
    /// Redis over RESP (GET, SET, DEL).
    Redis,
    /// Garage's K2V API (ReadItem, InsertItem, DeleteItem), requests signed
    /// with AWS SigV4; needs --access-key-id, --secret-access-key, --bucket.
    Garage,
}

impl TargetKind {
    /// Whether a write's answer carries the key's new causal context. On
    /// Garage it does not (K2V's InsertItem answers 204 and no token), so
    /// the token a write was sent with is spent: the next write of the key
    /// must read first, or it adds a concurrent value.
    pub fn writes_return_context(self) -> bool {
        self != TargetKind::Garage
    }
}

impl fmt::Display for TargetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TargetKind::Vinz => "vinz",
            TargetKind::Etcd => "etcd",
            TargetKind::Redis => "redis",
            TargetKind::Garage => "garage",
        })
    }
}

/// Which node of `--nodes` a request goes to (`--route`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Round robin over the nodes, whatever the key.
    #[default]
    Any,
    /// A node that is a primary replica of the request's key (round robin
    /// over its primaries among --nodes), as Riak's smart clients do: the
    /// node then stamps a write itself instead of asking a replica to.
    Preflist,
}

/// Where each partition's primaries are among `--nodes`: learnt once before
/// the run (`Target::learn_placement`); a key is placed the way the nodes
/// place it (`core::ring::partition_of`). A ring that changes during the
/// run is not followed: requests then still go to nodes that answer them,
/// only not always to a replica.
#[derive(Debug)]
struct Placement {
    partitions: u32,
    /// Per partition, the indices in `--nodes` of its primaries, in
    /// preference-list order (empty: none of them is in `--nodes`).
    primaries: Vec<Vec<usize>>,
}

/// At most this many probe names are tried to find a key in every partition
/// (a ring has at most a few thousand partitions; a good hash covers them
/// well within this).
const PROBE_NAMES_MAX: u64 = 1_000_000;

/// What every worker shares: the nodes, the HTTP connection pool, options.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: TargetKind,
    pub nodes: Arc<[String]>,
    /// Each node's base URL (`http://HOST:PORT` or `https://HOST:PORT`).
    bases: Arc<[String]>,
    http: Client<Connector, Full<Bytes>>,
    r: Option<String>,
    w: Option<String>,
    timeout: Duration,
    /// `Authorization: Bearer TOKEN` for vinz, when given.
    authorization: Option<HeaderValue>,
    /// `--failover`: see [`Conn::call_failing_over`].
    failover: bool,
    /// `--route preflist`, once learnt.
    placement: Option<Arc<Placement>>,
    /// Garage's credentials, region and bucket (`--target garage`).
    k2v: Option<Arc<K2v>>,
}

impl Target {
    pub fn new(
        kind: TargetKind,
        nodes: Vec<String>,
        tls: &ClientTls,
        r: Option<String>,
        w: Option<String>,
        timeout: Duration,
    ) -> Target {
        let mut connector = HttpConnector::new();
        // Small requests: do not let Nagle hold them back.
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeout));
        // HTTP/1.1 keep-alive: one pooled connection per in-flight request
        // and node, reused for the whole run.
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(tls.connector(connector));
        let bases = nodes.iter().map(|n| tls.base_url(n)).collect();
        Target {
            kind,
            nodes: nodes.into(),
            bases,
            http,
            r,
            w,
            timeout,
            authorization: None,
            failover: false,
            placement: None,
            k2v: None,
        }
    }

    /// Sends a request a node did not answer on to the next node
    /// (`--failover`, HTTP targets).
    pub fn with_failover(mut self, failover: bool) -> Target {
        self.failover = failover;
        self
    }

    /// `--route preflist`: asks the first node for the ring's partition
    /// count (`/admin/ring`) and, for one key of each partition, its
    /// preference list (`/admin/preflist/{key}`), so that each request can
    /// go to a primary of its key.
    pub async fn learn_placement(mut self) -> Result<Target, String> {
        if self.kind != TargetKind::Vinz {
            return Err(format!("--route preflist is for --target vinz, not {}", self.kind));
        }
        let conn = Conn { target: self.clone(), next: 0, redis: None };
        let json = |uri: String| {
            let conn = &conn;
            async move {
                let (status, _, body) =
                    conn.http(Method::GET, &uri, None, Bytes::new()).await.map_err(|e| format!("{uri}: {e}"))?;
                let body = ok_status(status, &body).map_err(|e| format!("{uri}: {e}"))?;
                serde_json::from_slice::<serde_json::Value>(body).map_err(|e| format!("{uri}: {e}"))
            }
        };
        let ring = json(format!("{}/admin/ring", self.bases[0])).await?;
        let partitions = ring["partitions"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| p.is_power_of_two())
            .ok_or_else(|| format!("/admin/ring: no partition count in {ring}"))?;
        let mut probes: Vec<Option<String>> = vec![None; partitions as usize];
        let mut missing = partitions as usize;
        for i in 0..PROBE_NAMES_MAX {
            if missing == 0 {
                break;
            }
            let name = format!("vinzclortho-route-probe-{i}");
            let p = partition_of(&ObjectKey::in_default_bucket(name.clone()), partitions) as usize;
            if probes[p].is_none() {
                probes[p] = Some(name);
                missing -= 1;
            }
        }
        let address = |n: &str| {
            let n = n.strip_prefix("https://").or_else(|| n.strip_prefix("http://")).unwrap_or(n);
            n.trim_end_matches('/').to_owned()
        };
        let nodes: Vec<String> = self.nodes.iter().map(|n| address(n)).collect();
        let mut primaries = Vec::with_capacity(partitions as usize);
        for (p, probe) in probes.into_iter().enumerate() {
            let probe = probe.ok_or_else(|| format!("no probe key found for partition {p}"))?;
            let list = json(format!("{}/admin/preflist/{probe}", self.bases[p % self.bases.len()])).await?;
            if list["partition"].as_u64() != Some(p as u64) {
                return Err(format!("/admin/preflist/{probe}: partition {} where {p} was expected", list["partition"]));
            }
            let entries = list["preflist"].as_array().cloned().unwrap_or_default();
            let indices = entries
                .iter()
                .filter(|e| e["primary"].as_bool() == Some(true))
                .filter_map(|e| e["node"].as_str())
                .filter_map(|node| nodes.iter().position(|n| *n == address(node)))
                .collect();
            primaries.push(indices);
        }
        self.placement = Some(Arc::new(Placement { partitions, primaries }));
        Ok(self)
    }

    /// The node for a request on `key`, the `turn`th of its kind: a primary
    /// of the key with `--route preflist` (round robin over them), else
    /// `fallback` (round robin over every node).
    fn node_for(&self, key: &str, turn: usize, fallback: usize) -> usize {
        let Some(placement) = &self.placement else { return fallback };
        let p = partition_of(&ObjectKey::in_default_bucket(key.to_owned()), placement.partitions) as usize;
        match placement.primaries.get(p) {
            Some(nodes) if !nodes.is_empty() => nodes[turn % nodes.len()],
            _ => fallback,
        }
    }

    /// Signs and addresses requests for Garage (`--target garage`).
    pub fn with_k2v(mut self, k2v: K2v) -> Target {
        self.k2v = Some(Arc::new(k2v));
        self
    }

    /// The same target, reading with `?r=R` (sharing the connection pool).
    pub fn with_read_quorum(&self, r: &str) -> Target {
        Target { r: Some(r.to_owned()), ..self.clone() }
    }

    /// Sends `token` as a bearer token with every request (`--token`).
    pub fn with_token(mut self, token: Option<&str>) -> Result<Target, String> {
        self.authorization = match token {
            None => None,
            Some(t) => Some(
                HeaderValue::from_str(&format!("Bearer {}", t.trim()))
                    .map_err(|_| "--token: the token must be visible ASCII".to_owned())?,
            ),
        };
        Ok(self)
    }

    /// A worker's connection; worker i starts at node i and then goes round
    /// the nodes, one request each.
    pub fn conn(&self, worker: usize) -> Conn {
        Conn { target: self.clone(), next: worker % self.nodes.len(), redis: None }
    }

    /// Checks that `node` answers at all, before the run starts.
    pub async fn probe(&self, node: usize) -> Result<(), Failure> {
        let mut conn = Conn { target: self.clone(), next: node, redis: None };
        match self.kind {
            TargetKind::Vinz => {
                let uri = format!("{}/ping", self.bases[node]);
                let (status, _, body) = conn.http(Method::GET, &uri, None, Bytes::new()).await?;
                ok_status(status, &body).map(drop)
            }
            TargetKind::Etcd | TargetKind::Redis | TargetKind::Garage => {
                let read = Request { op: Op::Read, key: "vinzclortho-bench-probe", value: Bytes::new(), context: None };
                conn.call(&read).await.map(drop)
            }
        }
    }
}

/// What [`Conn::call_failing_over`] came to.
#[derive(Debug)]
pub struct Attempts {
    pub result: Result<Reply, Failure>,
    /// Times the request was sent on to another node.
    pub failovers: u32,
    /// An earlier attempt's connection broke before its answer: it may
    /// have acted.
    pub doubtful: bool,
}

/// One worker's way to the target: HTTP requests go through the shared pool
/// (round robin over the nodes); Redis keeps its own connection.
pub struct Conn {
    target: Target,
    next: usize,
    redis: Option<RedisConn>,
}

impl Conn {
    pub async fn call(&mut self, req: &Request<'_>) -> Result<Reply, Failure> {
        let node = self.target.node_for(req.key, self.next, self.next);
        self.next = (self.next + 1) % self.target.nodes.len();
        match self.target.kind {
            TargetKind::Vinz => self.vinz(node, req).await,
            TargetKind::Etcd => self.etcd(node, req).await,
            TargetKind::Redis => self.redis(node, req).await,
            TargetKind::Garage => self.garage(node, req).await,
        }
    }

    /// [`Conn::call`], and with `--failover`, again on the next node while
    /// one did not answer ([`Failure::fails_over`]): each node at most once,
    /// so a cluster that is down altogether still fails fast. Returns the
    /// last attempt's result, how many times the request was sent on, and
    /// whether an earlier attempt may have acted ([`Failure::may_have_acted`]:
    /// for a write, one whose outcome is unknown).
    pub async fn call_failing_over(&mut self, req: &Request<'_>) -> Attempts {
        let attempts = if self.target.failover { self.target.nodes.len() } else { 1 };
        let mut outcome = Attempts { result: self.call(req).await, failovers: 0, doubtful: false };
        while (outcome.failovers as usize) + 1 < attempts {
            match &outcome.result {
                Err(failure) if failure.fails_over() => outcome.doubtful |= failure.may_have_acted(),
                _ => break,
            }
            outcome.failovers += 1;
            outcome.result = self.call(req).await;
        }
        outcome
    }

    async fn vinz(&mut self, node: usize, req: &Request<'_>) -> Result<Reply, Failure> {
        let key = utf8_percent_encode(req.key, KEY_SAFE);
        let t = &self.target;
        let query = match req.op {
            Op::Read => t.r.as_ref().map(|r| format!("?r={r}")).unwrap_or_default(),
            Op::Write => t.w.as_ref().map(|w| format!("?w={w}")).unwrap_or_default(),
            Op::Delete => match (&t.r, &t.w) {
                (Some(r), Some(w)) => format!("?r={r}&w={w}"),
                (Some(r), None) => format!("?r={r}"),
                (None, Some(w)) => format!("?w={w}"),
                (None, None) => String::new(),
            },
        };
        let uri = format!("{}/store/{key}{query}", t.bases[node]);
        let (method, body) = match req.op {
            Op::Read => (Method::GET, Bytes::new()),
            Op::Write => (Method::PUT, req.value.clone()),
            Op::Delete => (Method::DELETE, Bytes::new()),
        };
        let (status, headers, body) = self.http(method, &uri, req.context.clone(), body).await?;
        if status == StatusCode::SERVICE_UNAVAILABLE && headers.contains_key(SHUTTING_DOWN_HEADER) {
            return Err(Failure::ShuttingDown(t.nodes[node].clone()));
        }
        let context = headers.get(CONTEXT_HEADER).cloned();
        match (req.op, status) {
            (Op::Read, StatusCode::OK) => Ok(Reply::Value(body, context)),
            (Op::Read, StatusCode::NOT_FOUND) => Ok(Reply::NotFound(context)),
            (Op::Read, StatusCode::MULTIPLE_CHOICES) => {
                let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
                let siblings = multipart_values(content_type, &body).map_err(Failure::Protocol)?;
                Ok(Reply::Siblings(siblings, context))
            }
            (Op::Write | Op::Delete, s) if s.is_success() => Ok(Reply::Done(context)),
            (_, s) => Err(Failure::status(s, &body)),
        }
    }

    async fn etcd(&mut self, node: usize, req: &Request<'_>) -> Result<Reply, Failure> {
        let key = B64.encode(req.key);
        let (path, body) = match req.op {
            Op::Read => ("range", format!(r#"{{"key":"{key}"}}"#)),
            Op::Write => ("put", format!(r#"{{"key":"{key}","value":"{}"}}"#, B64.encode(&req.value))),
            Op::Delete => ("deleterange", format!(r#"{{"key":"{key}"}}"#)),
        };
        let uri = format!("{}/v3/kv/{path}", self.target.bases[node]);
        let (status, _, body) = self.http(Method::POST, &uri, None, Bytes::from(body)).await?;
        let body = ok_status(status, &body)?;
        if req.op != Op::Read {
            return Ok(Reply::Done(None));
        }
        #[derive(serde::Deserialize)]
        struct Range {
            #[serde(default)]
            kvs: Vec<Kv>,
        }
        #[derive(serde::Deserialize)]
        struct Kv {
            #[serde(default)]
            value: String,
        }
        let range: Range = serde_json::from_slice(body).map_err(|e| Failure::Protocol(format!("range: {e}")))?;
        match range.kvs.first() {
            None => Ok(Reply::NotFound(None)),
            Some(kv) => {
                let value = B64.decode(&kv.value).map_err(|e| Failure::Protocol(format!("range value: {e}")))?;
                Ok(Reply::Value(value.into(), None))
            }
        }
    }

    /// K2V: ReadItem, InsertItem, DeleteItem. A write or delete without a
    /// token (none seen yet, or spent by the key's last write: see
    /// [`TargetKind::writes_return_context`]) reads the item first for its
    /// token, so it supersedes what is stored rather than adding a
    /// concurrent value; its latency counts both. A delete of an item that
    /// is not there is done without sending it.
    async fn garage(&mut self, node: usize, req: &Request<'_>) -> Result<Reply, Failure> {
        let mut token = req.context.clone();
        if req.op != Op::Read && token.is_none() {
            match self.garage_read(node, req.key).await? {
                Reply::NotFound(None) if req.op == Op::Delete => return Ok(Reply::Done(None)),
                reply => token = reply.context().cloned(),
            }
        }
        if req.op == Op::Read {
            return self.garage_read(node, req.key).await;
        }
        let request = self.k2v_request(node, Call::of(req.op, req.value.clone()), req.key, token.as_ref())?;
        let (status, _, body) = self.send(request).await?;
        K2v::write_answer(status, &body)
    }

    /// ReadItem; on a 409 (concurrent values, when the server would not
    /// answer JSON at once) again asking for JSON, which lists them.
    async fn garage_read(&self, node: usize, key: &str) -> Result<Reply, Failure> {
        let request = self.k2v_request(node, Call::Read, key, None)?;
        let (status, headers, body) = self.send(request).await?;
        match K2v::read_answer(status, &headers, body)? {
            ReadAnswer::Reply(reply) => Ok(reply),
            ReadAnswer::Concurrent => {
                let request = self.k2v_request(node, Call::ReadJson, key, None)?;
                let (status, headers, body) = self.send(request).await?;
                match K2v::read_answer(status, &headers, body)? {
                    ReadAnswer::Reply(reply) => Ok(reply),
                    ReadAnswer::Concurrent => Err(Failure::Protocol("409 to a ReadItem that accepts JSON".into())),
                }
            }
        }
    }

    fn k2v_request(
        &self,
        node: usize,
        call: Call,
        key: &str,
        token: Option<&HeaderValue>,
    ) -> Result<http::Request<Full<Bytes>>, Failure> {
        let k2v =
            self.target.k2v.as_ref().ok_or_else(|| Failure::Protocol("--target garage without credentials".into()))?;
        let request =
            k2v.request(&self.target.bases[node], call, key, token, SystemTime::now()).map_err(Failure::Protocol)?;
        Ok(request.map(Full::new))
    }

    /// Redis keeps one connection per worker, to the node it first used.
    async fn redis(&mut self, node: usize, req: &Request<'_>) -> Result<Reply, Failure> {
        let timeout = self.target.timeout;
        let conn = match &mut self.redis {
            Some(conn) => conn,
            None => {
                let node = &self.target.nodes[node];
                let conn = tokio::time::timeout(timeout, RedisConn::connect(node))
                    .await
                    .map_err(|_| Failure::Connect(format!("{node}: no connection within the timeout")))?
                    .map_err(|e| Failure::Connect(format!("{node}: {e}")))?;
                self.redis.insert(conn)
            }
        };
        let result = tokio::time::timeout(timeout, conn.call(req)).await.unwrap_or(Err(Failure::Timeout));
        if matches!(result, Err(Failure::Timeout | Failure::Connection(_) | Failure::Protocol(_))) {
            // A late or garbled reply would answer the next request: start over.
            self.redis = None;
        }
        result
    }

    async fn http(
        &self,
        method: Method,
        uri: &str,
        context: Option<HeaderValue>,
        body: Bytes,
    ) -> Result<(StatusCode, http::HeaderMap, Bytes), Failure> {
        let mut request = http::Request::builder().method(method).uri(uri);
        if let Some(context) = context {
            request = request.header(CONTEXT_HEADER, context);
        }
        if let Some(authorization) = &self.target.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization.clone());
        }
        if self.target.kind == TargetKind::Etcd {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request.body(Full::new(body)).map_err(|e| Failure::Protocol(format!("request {uri}: {e}")))?;
        self.send(request).await
    }

    /// Sends `request` through the pool and reads the whole answer, within
    /// the timeout.
    async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<(StatusCode, http::HeaderMap, Bytes), Failure> {
        let exchange = async {
            let response = self.target.http.request(request).await.map_err(|e| match e.source() {
                // Skip hyper's "client error (Connect)": the source says it.
                Some(source) if e.is_connect() => Failure::Connect(error_chain(source)),
                _ => Failure::Connection(error_chain(&e)),
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| Failure::Connection(error_chain(&e)))?.to_bytes();
            Ok((parts.status, parts.headers, body))
        };
        tokio::time::timeout(self.target.timeout, exchange).await.unwrap_or(Err(Failure::Timeout))
    }
}

fn ok_status(status: StatusCode, body: &Bytes) -> Result<&Bytes, Failure> {
    if status.is_success() { Ok(body) } else { Err(Failure::status(status, body)) }
}

/// "connect error: tcp connect error: Connection refused (os error 111)".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The part bodies of a `multipart/mixed` answer (Vinz Clortho's 300).
pub fn multipart_values(content_type: &str, body: &[u8]) -> Result<Vec<Bytes>, String> {
    let boundary = content_type
        .split(';')
        .filter_map(|p| p.trim().strip_prefix("boundary="))
        .next()
        .map(|b| b.trim_matches('"'))
        .ok_or_else(|| format!("300 without a multipart boundary (Content-Type {content_type:?})"))?;
    let delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut values = Vec::new();
    let mut parts = split(body, &delimiter).into_iter().skip(1);
    for part in parts.by_ref() {
        if part.starts_with(b"--") {
            return Ok(values);
        }
        let part = part.strip_prefix(b"\r\n").ok_or("a multipart delimiter not followed by CRLF")?;
        let start = find(part, b"\r\n\r\n").map(|i| i + 4).ok_or("a multipart part without a blank line")?;
        values.push(Bytes::copy_from_slice(&part[start..]));
    }
    Err("a multipart body without its closing delimiter".into())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn split<'a>(mut body: &'a [u8], delimiter: &[u8]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::new();
    while let Some(i) = find(body, delimiter) {
        pieces.push(&body[..i]);
        body = &body[i + delimiter.len()..];
    }
    pieces.push(body);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_garage_writes_spend_their_context() {
        assert!(!TargetKind::Garage.writes_return_context());
        for kind in [TargetKind::Vinz, TargetKind::Etcd, TargetKind::Redis] {
            assert!(kind.writes_return_context(), "{kind}");
        }
    }

    #[test]
    fn multipart_bodies_split_into_values() {
        let body = b"\r\n--XyZ\r\nContent-Type: text/plain\r\nLast-Modified: x\r\n\r\none\r\n--XyZ\r\n\
                     Content-Type: text/plain\r\n\r\ntwo\r\nlines\r\n--XyZ--\r\n";
        let values = multipart_values("multipart/mixed; boundary=XyZ", body).unwrap();
        assert_eq!(values, vec![Bytes::from_static(b"one"), Bytes::from_static(b"two\r\nlines")]);
        assert!(multipart_values("multipart/mixed", body).unwrap_err().contains("boundary"));
        assert!(multipart_values("multipart/mixed; boundary=XyZ", b"\r\n--XyZ\r\nA: b\r\n\r\nv").is_err());
    }
}
