//! Garage's K2V API as a bench target (`--target garage`): how a key maps to
//! an item, the requests (ReadItem, InsertItem, DeleteItem), their AWS SigV4
//! signatures, and what the answers mean. No I/O: `target` sends what this
//! builds.
//!
//! K2V stores `(partition key, sort key) -> values` with causality tokens
//! (dotted version vectors, as Riak): a write that carries the token of the
//! last read supersedes what that read saw; one without adds a concurrent
//! value. So the token plays the part of our context, and the generator
//! carries the last one seen per key the same way.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings, UriPathNormalizationMode,
    sign,
};
use aws_sigv4::sign::v4;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use bytes::Bytes;
use http::header::{ACCEPT, HOST, HeaderValue};
use http::{HeaderMap, Method, StatusCode};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::request::{Failure, Reply};
use super::workload::Op;

/// The causality token, on reads' answers and on writes.
pub const CAUSALITY_HEADER: &str = "x-garage-causality-token";
/// K2V signs as its own service name, with the S3 API's region.
const SERVICE: &str = "k2v";
/// Keys spread over this many partition keys: one partition would put every
/// write through the same per-partition item counter of K2V's index.
const PARTITIONS: u64 = 16;
/// Bytes sent as they are in a path or query; the rest percent-encoded.
const SAFE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `--target garage`'s flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Garage (--target garage)")]
pub struct GarageArgs {
    /// Access key ID of a Garage key allowed to read and write --bucket
    #[arg(long, env = "AWS_ACCESS_KEY_ID", value_name = "ID")]
    pub access_key_id: Option<String>,
    /// Its secret key
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true, value_name = "SECRET")]
    pub secret_access_key: Option<String>,
    /// The bucket the items go to
    #[arg(long, value_name = "NAME")]
    pub bucket: Option<String>,
    /// The region requests are signed for: the `s3_region` of the Garage
    /// configuration
    #[arg(long, default_value = "garage", value_name = "REGION")]
    pub region: String,
}

/// What signs and addresses K2V requests: credentials, region, bucket.
#[derive(Clone)]
pub struct K2v {
    credentials: Credentials,
    region: String,
    bucket: String,
}

impl std::fmt::Debug for K2v {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("K2v").field("region", &self.region).field("bucket", &self.bucket).finish_non_exhaustive()
    }
}

/// The K2V calls the generator makes.
#[derive(Debug, Clone)]
pub enum Call {
    /// ReadItem: a single value as it is, concurrent values as JSON.
    Read,
    /// ReadItem, JSON whatever there is (after a 409).
    ReadJson,
    /// InsertItem of this value.
    Insert(Bytes),
    /// DeleteItem.
    Delete,
}

impl Call {
    /// The call for a bench request: `value` is a write's.
    pub fn of(op: Op, value: Bytes) -> Call {
        match op {
            Op::Read => Call::Read,
            Op::Write => Call::Insert(value),
            Op::Delete => Call::Delete,
        }
    }
}

/// How a ReadItem was answered.
#[derive(Debug)]
pub enum ReadAnswer {
    Reply(Reply),
    /// 409: concurrent values, which only a JSON answer lists; ask again
    /// with `Accept: application/json`.
    Concurrent,
}

impl K2v {
    pub fn from_args(args: &GarageArgs) -> Result<K2v, String> {
        let missing = |what: &str| format!("--target garage needs {what}");
        let key = args.access_key_id.as_deref().ok_or_else(|| missing("--access-key-id (or AWS_ACCESS_KEY_ID)"))?;
        let secret = args
            .secret_access_key
            .as_deref()
            .ok_or_else(|| missing("--secret-access-key (or AWS_SECRET_ACCESS_KEY)"))?;
        let bucket = args.bucket.as_deref().ok_or_else(|| missing("--bucket"))?;
        K2v::new(key, secret, &args.region, bucket)
    }

    pub fn new(access_key_id: &str, secret_access_key: &str, region: &str, bucket: &str) -> Result<K2v, String> {
        let visible = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
        if !visible(access_key_id) || !visible(secret_access_key) {
            return Err("--access-key-id and --secret-access-key must be visible ASCII".into());
        }
        if !visible(region) {
            return Err(format!("--region {region:?}: not a region name"));
        }
        // Garage's bucket names are S3's: lowercase letters, digits, '-', '.'.
        if bucket.is_empty()
            || !bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        {
            return Err(format!("--bucket {bucket:?}: not a bucket name (lowercase letters, digits, '-', '.')"));
        }
        Ok(K2v {
            credentials: Credentials::new(access_key_id, secret_access_key, None, None, "vinzclortho-bench"),
            region: region.to_owned(),
            bucket: bucket.to_owned(),
        })
    }

    /// The partition key of a bench key: one of a few, by a stable hash of
    /// the name (FNV-1a), so every run maps a key to the same item.
    pub fn partition_of(key: &str) -> String {
        let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        format!("bench-{}", hash % PARTITIONS)
    }

    /// The signed request for `call` on `key` at `base` (`http://HOST:PORT`).
    /// `token` is the last causality token seen for the key; `now` dates the
    /// signature.
    pub fn request(
        &self,
        base: &str,
        call: Call,
        key: &str,
        token: Option<&HeaderValue>,
        now: SystemTime,
    ) -> Result<http::Request<Bytes>, String> {
        let uri = format!(
            "{base}/{}/{}?sort_key={}",
            self.bucket,
            utf8_percent_encode(&K2v::partition_of(key), SAFE),
            utf8_percent_encode(key, SAFE)
        );
        let (method, body, accept) = match call {
            Call::Read => (Method::GET, Bytes::new(), Some("application/octet-stream, application/json")),
            Call::ReadJson => (Method::GET, Bytes::new(), Some("application/json")),
            Call::Insert(value) => (Method::PUT, value, None),
            Call::Delete => (Method::DELETE, Bytes::new(), None),
        };
        let host = base.split_once("://").map_or(base, |(_, rest)| rest).trim_end_matches('/').to_owned();
        let mut request = http::Request::builder().method(method).uri(&uri).header(HOST, host);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(token) = token {
            request = request.header(CAUSALITY_HEADER, token.clone());
        }
        let mut request = request.body(body).map_err(|e| format!("request {uri}: {e}"))?;
        self.sign(&mut request, now)?;
        Ok(request)
    }

    /// Adds SigV4's `Authorization`, `x-amz-date` and
    /// `x-amz-content-sha256` (Garage requires the last) to `request`,
    /// signing every header it has.
    pub fn sign(&self, request: &mut http::Request<Bytes>, now: SystemTime) -> Result<(), String> {
        self.sign_as(SERVICE, request, now)
    }

    fn sign_as(&self, service: &str, request: &mut http::Request<Bytes>, now: SystemTime) -> Result<(), String> {
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        // Garage encodes the path a second time for every service but S3,
        // as AWS does, and never normalizes K2V paths.
        settings.percent_encoding_mode = PercentEncodingMode::Double;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name(service)
            .time(now)
            .settings(settings)
            .build()
            .map_err(|e| format!("signing: {e}"))?
            .into();
        let headers = request
            .headers()
            .iter()
            .map(|(name, value)| Ok((name.as_str(), value.to_str().map_err(|_| format!("header {name}: not ASCII"))?)))
            .collect::<Result<Vec<_>, String>>()?;
        let uri = request.uri().to_string();
        let signable = SignableRequest::new(
            request.method().as_str(),
            uri,
            headers.into_iter(),
            SignableBody::Bytes(request.body()),
        )
        .map_err(|e| format!("signing: {e}"))?;
        let (instructions, _signature) = sign(signable, &params).map_err(|e| format!("signing: {e}"))?.into_parts();
        instructions.apply_to_request_http1x(request);
        Ok(())
    }

    /// What a ReadItem's answer says: a value (200), a deleted item (204,
    /// a tombstone) or none (404) as not found, or concurrent values (409
    /// to a binary read, or a JSON list).
    pub fn read_answer(status: StatusCode, headers: &HeaderMap, body: Bytes) -> Result<ReadAnswer, Failure> {
        let token = headers.get(CAUSALITY_HEADER).cloned();
        let json = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with("application/json"));
        match status {
            StatusCode::OK if json => Ok(ReadAnswer::Reply(concurrent_values(&body, token)?)),
            StatusCode::OK => Ok(ReadAnswer::Reply(Reply::Value(body, token))),
            StatusCode::NO_CONTENT | StatusCode::NOT_FOUND => Ok(ReadAnswer::Reply(Reply::NotFound(token))),
            StatusCode::CONFLICT => Ok(ReadAnswer::Concurrent),
            s => Err(Failure::status(s, &body)),
        }
    }

    /// What an InsertItem's or DeleteItem's answer says (204 on success).
    /// It carries no token: the one the write was sent with does not cover
    /// the value it wrote, so the key's next write must read first.
    pub fn write_answer(status: StatusCode, body: &Bytes) -> Result<Reply, Failure> {
        if status.is_success() { Ok(Reply::Done(None)) } else { Err(Failure::status(status, body)) }
    }
}

/// A JSON ReadItem answer: the base64 values, `null` for a tombstone.
/// Tombstones among values are left out (to --check, siblings are values);
/// one value left is a plain value, none is not found.
fn concurrent_values(body: &[u8], token: Option<HeaderValue>) -> Result<Reply, Failure> {
    let items: Vec<Option<String>> =
        serde_json::from_slice(body).map_err(|e| Failure::Protocol(format!("ReadItem JSON: {e}")))?;
    let mut values = items
        .into_iter()
        .flatten()
        .map(|v| B64.decode(v).map(Bytes::from).map_err(|e| Failure::Protocol(format!("ReadItem value: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(match values.len() {
        0 => Reply::NotFound(token),
        1 => Reply::Value(values.pop().expect("one value"), token),
        _ => Reply::Siblings(values, token),
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hmac::{KeyInit, Mac};
    use sha2::{Digest, Sha256};

    use super::*;

    fn at(unix_secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs)
    }

    fn header<'a>(request: &'a http::Request<Bytes>, name: &str) -> &'a str {
        request.headers().get(name).unwrap_or_else(|| panic!("no {name}")).to_str().unwrap()
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn hmac(key: &[u8], data: &str) -> Vec<u8> {
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key).unwrap();
        mac.update(data.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// SigV4's URI encoding as Garage's server applies it.
    fn uri_encode(s: &str, encode_slash: bool) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                b'/' if !encode_slash => "/".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }

    /// The signature Garage computes for a K2V request (its
    /// `check_standard_signature`): path URI-encoded once more, query
    /// decoded then encoded, the signed headers, the
    /// `x-amz-content-sha256` header as the payload hash. An independent
    /// check that aws-sigv4 signs the way the server verifies.
    fn garage_signature(request: &http::Request<Bytes>, secret: &str, region: &str) -> String {
        let authorization = header(request, "authorization");
        let signed = authorization.split("SignedHeaders=").nth(1).unwrap().split(',').next().unwrap();
        let mut query: Vec<String> = form_urlencoded_pairs(request.uri().query().unwrap_or_default())
            .into_iter()
            .map(|(k, v)| format!("{}={}", uri_encode(&k, true), uri_encode(&v, true)))
            .collect();
        query.sort();
        let headers: Vec<String> = signed.split(';').map(|h| format!("{h}:{}", header(request, h).trim())).collect();
        let canonical = [
            request.method().as_str(),
            &uri_encode(request.uri().path(), false),
            &query.join("&"),
            &headers.join("\n"),
            "",
            signed,
            header(request, "x-amz-content-sha256"),
        ]
        .join("\n");
        let date = header(request, "x-amz-date");
        let scope = format!("{}/{region}/k2v/aws4_request", &date[..8]);
        let to_sign = format!("AWS4-HMAC-SHA256\n{date}\n{scope}\n{}", hex(&Sha256::digest(canonical.as_bytes())));
        let mut key = hmac(format!("AWS4{secret}").as_bytes(), &date[..8]);
        for part in [region, "k2v", "aws4_request"] {
            key = hmac(&key, part);
        }
        hex(&hmac(&key, &to_sign))
    }

    fn form_urlencoded_pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8().unwrap().into_owned()
                };
                (decode(k), decode(v))
            })
            .collect()
    }

    #[test]
    fn signs_aws_s3_get_object_example() {
        // AWS's worked example for a header-signed S3 GET ("Signature
        // Calculations for the Authorization Header", GET Object): the
        // x-amz-content-sha256 header included, as Garage requires.
        let k2v =
            K2v::new("AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "us-east-1", "examplebucket")
                .unwrap();
        let mut request = http::Request::get("https://examplebucket.s3.amazonaws.com/test.txt")
            .header(HOST, "examplebucket.s3.amazonaws.com")
            .header("range", "bytes=0-9")
            .body(Bytes::new())
            .unwrap();
        k2v.sign_as("s3", &mut request, at(1_369_353_600)).unwrap(); // 2013-05-24T00:00:00Z
        assert_eq!(header(&request, "x-amz-date"), "20130524T000000Z");
        assert_eq!(
            header(&request, "x-amz-content-sha256"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            header(&request, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, \
             Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
    }

    #[test]
    fn builds_signed_k2v_requests_garage_would_accept() {
        let k2v = K2v::new(
            "GK31c2f218a2e44f485b94239e",
            "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f",
            "garage",
            "bench",
        )
        .unwrap();
        let token = HeaderValue::from_static("opaquetoken123");
        let key = "bench-a b/ü+7";
        let now = at(1_764_676_800); // 2025-12-02T12:00:00Z
        let put = k2v
            .request("http://127.0.0.1:3904", Call::Insert(Bytes::from_static(b"v1")), key, Some(&token), now)
            .unwrap();
        assert_eq!(put.method(), Method::PUT);
        let partition = K2v::partition_of(key);
        assert_eq!(
            put.uri().to_string(),
            format!("http://127.0.0.1:3904/bench/{partition}?sort_key=bench-a%20b%2F%C3%BC%2B7")
        );
        assert_eq!(header(&put, "host"), "127.0.0.1:3904");
        assert_eq!(header(&put, CAUSALITY_HEADER), "opaquetoken123");
        assert_eq!(header(&put, "x-amz-date"), "20251202T120000Z");
        assert_eq!(header(&put, "x-amz-content-sha256"), hex(&Sha256::digest(b"v1")));
        assert_eq!(put.body(), &Bytes::from_static(b"v1"));
        let authorization = header(&put, "authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=GK31c2f218a2e44f485b94239e/20251202/garage/k2v/aws4_request, \
                 SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-garage-causality-token, Signature="
            ),
            "{authorization}"
        );
        let signature = authorization.rsplit("Signature=").next().unwrap();
        assert_eq!(signature, garage_signature(&put, "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f", "garage"));

        // A read asks for one value as it is, or all of them as JSON.
        let get = k2v.request("http://127.0.0.1:3904", Call::Read, key, None, now).unwrap();
        assert_eq!(get.method(), Method::GET);
        assert_eq!(header(&get, "accept"), "application/octet-stream, application/json");
        assert!(get.headers().get(CAUSALITY_HEADER).is_none());
        let signature = header(&get, "authorization").rsplit("Signature=").next().unwrap().to_owned();
        assert_eq!(signature, garage_signature(&get, "b892c0665f0ada8a4755dae98baa3b133590e11dae3bcc1f", "garage"));
        let json = k2v.request("http://127.0.0.1:3904", Call::ReadJson, key, None, now).unwrap();
        assert_eq!(header(&json, "accept"), "application/json");

        let delete = k2v.request("http://127.0.0.1:3904", Call::Delete, key, Some(&token), now).unwrap();
        assert_eq!(delete.method(), Method::DELETE);
        assert_eq!(header(&delete, CAUSALITY_HEADER), "opaquetoken123");
        assert!(delete.body().is_empty());
    }

    #[test]
    fn keys_spread_over_a_few_stable_partitions() {
        assert_eq!(K2v::partition_of("bench-1"), K2v::partition_of("bench-1"));
        let partitions: std::collections::BTreeSet<String> =
            (0..1000).map(|i| K2v::partition_of(&format!("bench-{i}"))).collect();
        assert_eq!(partitions.len(), PARTITIONS as usize);
        assert!(partitions.iter().all(|p| p.starts_with("bench-")));
    }

    #[test]
    fn read_answers_become_replies() {
        let token = HeaderValue::from_static("t1");
        let mut binary = HeaderMap::new();
        binary.insert(CAUSALITY_HEADER, token.clone());
        binary.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        let mut json = binary.clone();
        json.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let reply = |status, headers: &HeaderMap, body: &'static [u8]| match K2v::read_answer(
            status,
            headers,
            Bytes::from_static(body),
        )
        .unwrap()
        {
            ReadAnswer::Reply(reply) => reply,
            ReadAnswer::Concurrent => panic!("409"),
        };

        let Reply::Value(v, Some(t)) = reply(StatusCode::OK, &binary, b"v1") else { panic!() };
        assert_eq!((v.as_ref(), &t), (&b"v1"[..], &token));
        // 204: a tombstone, whose token a later write must carry.
        assert!(matches!(reply(StatusCode::NO_CONTENT, &binary, b""), Reply::NotFound(Some(t)) if t == token));
        assert!(matches!(reply(StatusCode::NOT_FOUND, &HeaderMap::new(), b"{}"), Reply::NotFound(None)));
        let Reply::Siblings(values, Some(_)) = reply(StatusCode::OK, &json, br#"["djE=", null, "djI="]"#) else {
            panic!()
        };
        assert_eq!(values, vec![Bytes::from_static(b"v1"), Bytes::from_static(b"v2")]);
        assert!(matches!(reply(StatusCode::OK, &json, br#"["djE=", null]"#), Reply::Value(v, _) if v == "v1"));
        assert!(matches!(reply(StatusCode::OK, &json, b"[null]"), Reply::NotFound(Some(_))));
        assert!(matches!(K2v::read_answer(StatusCode::CONFLICT, &binary, Bytes::new()), Ok(ReadAnswer::Concurrent)));
        assert!(matches!(
            K2v::read_answer(StatusCode::FORBIDDEN, &json, Bytes::from_static(b"Invalid signature")),
            Err(Failure::Status(403, body)) if body == "Invalid signature"
        ));
        assert!(matches!(
            K2v::read_answer(StatusCode::OK, &json, Bytes::from_static(b"[1]")),
            Err(Failure::Protocol(_))
        ));
        assert!(matches!(
            K2v::read_answer(StatusCode::OK, &json, Bytes::from_static(br#"["not base64!"]"#)),
            Err(Failure::Protocol(_))
        ));

        assert!(matches!(K2v::write_answer(StatusCode::NO_CONTENT, &Bytes::new()), Ok(Reply::Done(None))));
        assert!(matches!(
            K2v::write_answer(StatusCode::INTERNAL_SERVER_ERROR, &Bytes::from_static(b"quorum")),
            Err(Failure::Status(500, _))
        ));
    }

    #[test]
    fn flags_are_checked() {
        let missing = K2v::from_args(&GarageArgs { region: "garage".into(), ..GarageArgs::default() }).unwrap_err();
        assert!(missing.contains("--access-key-id"), "{missing}");
        let no_bucket = GarageArgs {
            access_key_id: Some("GK1".into()),
            secret_access_key: Some("s".into()),
            bucket: None,
            region: "garage".into(),
        };
        assert!(K2v::from_args(&no_bucket).unwrap_err().contains("--bucket"));
        assert!(K2v::new("GK1", "s", "garage", "Bench_1").unwrap_err().contains("bucket"));
        assert!(K2v::new("GK 1", "s", "garage", "bench").is_err());
        assert!(K2v::new("GK1", "s", "", "bench").is_err());
        let debug = format!("{:?}", K2v::new("GK1", "topsecret", "garage", "bench").unwrap());
        assert!(!debug.contains("topsecret"), "{debug}");
    }
}
