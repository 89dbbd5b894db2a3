//! Riak's bucket and key listings (`riak_kv_wm_buckets`,
//! `riak_kv_wm_keylist`), answered over a covering set
//! (`coordinator::coverage`):
//!
//! * `GET /buckets?buckets=true|stream`, `GET /types/T/buckets?...`: the
//!   buckets of the type (`default` without `/types/T`) that hold a live
//!   object, as `{"buckets":[...]}`.
//! * `GET /buckets/B/keys?keys=true|stream`, `GET /types/T/buckets/B/keys`,
//!   and the legacy `GET /riak/B?keys=...`: the bucket's keys, tombstones
//!   left out, as `{"keys":[...]}`.
//!
//! `true` answers with one JSON object once every partition answered; the
//! body is bounded ([`LIST_BODY_MAX_BYTES`], above it a 413 that points to
//! `stream`: Riak has no bound). `stream` answers at once with a chunked
//! body of JSON objects `{"keys":[...]}` (or `"buckets"`), one per page as
//! pages arrive from the holders, never holding the whole listing, and ends
//! with an empty one, as Riak does. Riak's Python client splits that body
//! at the first `}`, so `{` and `}` inside names are written as `\u007b`
//! and `\u007d` (the same JSON strings). Without `keys`, or with another
//! value than `true` or `stream`, Riak's key list answers `{}` (its bucket
//! properties, which this resource does not serve), and so does this one;
//! its bucket list fails with a 500 (a crash in `riak_kv_wm_buckets`), where
//! this one answers 400 and says what it takes. `timeout` (ms, an integer;
//! anything else is a 400 as in Riak) bounds the listing, 5 minutes by
//! default.
//!
//! Failures: a partition without a live holder is a 503 before anything is
//! sent (Riak answers 200 with `{"error":...}` for `true`). A failing
//! holder is replaced by another (`coordinator::coverage`); when none can
//! answer a partition, or at the timeout, `true` is a 503. With `stream` the status
//! is sent already: the body gets one last object `{"error":"..."}` and
//! ends, as Riak's `riak_kv_wm_keylist` ends it on a timeout (`done` after
//! the error object); Riak's clients raise on that object (the Python
//! client's `test_stream_keys_timeout` needs it, and fails on a body cut
//! off before it is read).
//!
//! Names are bytes; JSON carries text. Riak's JSON encoder (mochijson2)
//! fails on a name that is not UTF-8, so the whole listing fails with a 500;
//! so does this one (500 for `true`; for `stream`, the error object), and
//! the log names the offending name in hex.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::Uri;
use percent_encoding::percent_decode_str;
use tokio::time::Instant;

use super::AppState;
use super::error::ApiError;
use crate::coordinator::coverage::{CoverageQuery, Listing, NAME_MAX_BYTES};
use crate::core::key::DEFAULT_NAMESPACE;
use crate::error::ErrorCode;

/// The largest body `keys=true` or `buckets=true` answers with.
pub const LIST_BODY_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long a listing (or a 2i query) may take unless `timeout` says
/// otherwise (Riak's).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What a listing path names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Listed {
    Buckets { bucket_type: Vec<u8> },
    Keys { bucket_type: Vec<u8>, bucket: Vec<u8> },
}

/// The listing a path names, its names percent-decoded; `None` for any
/// other path (object routes, bucket properties, ...).
pub(super) fn listing_target(path: &str) -> Option<Listed> {
    let segments: Vec<&str> = path.split('/').collect();
    let decode = |s: &str| percent_decode_str(s).collect::<Vec<u8>>();
    let default = || DEFAULT_NAMESPACE.as_bytes().to_vec();
    match segments.as_slice() {
        ["", "buckets"] => Some(Listed::Buckets { bucket_type: default() }),
        ["", "types", t, "buckets"] => Some(Listed::Buckets { bucket_type: decode(t) }),
        ["", "buckets", b, "keys"] | ["", "riak", b] => {
            Some(Listed::Keys { bucket_type: default(), bucket: decode(b) })
        }
        ["", "types", t, "buckets", b, "keys"] => Some(Listed::Keys { bucket_type: decode(t), bucket: decode(b) }),
        _ => None,
    }
}

/// The first value of `name` in the query string, as Riak reads it.
pub(crate) fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `timeout`: milliseconds, an integer.
fn timeout(params: &[(String, String)]) -> Result<Duration, ApiError> {
    match param(params, "timeout") {
        None => Ok(DEFAULT_TIMEOUT),
        Some(text) => text
            .parse::<u32>()
            .map(|ms| Duration::from_millis(u64::from(ms)))
            .map_err(|_| ApiError::bad_request(format!("Bad timeout value {text:?}"))),
    }
}

/// `true` or `stream`; `None` for anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Whole,
    Stream,
}

fn mode(value: Option<&str>) -> Option<Mode> {
    match value {
        Some("true") => Some(Mode::Whole),
        Some("stream") => Some(Mode::Stream),
        _ => None,
    }
}

pub(crate) fn check_name(what: &str, name: &[u8]) -> Result<(), ApiError> {
    if name.is_empty() {
        return Err(ApiError::bad_request(format!("the {what} name is empty")));
    }
    if name.len() > NAME_MAX_BYTES {
        return Err(ApiError::new(
            ErrorCode::UriTooLong,
            format!("the {what} name is {} bytes long, above the limit of {NAME_MAX_BYTES}", name.len()),
        ));
    }
    Ok(())
}

/// 404 for a bucket type that does not exist or is not active (Riak's
/// `resource_exists`).
pub(crate) fn check_bucket_type(api: &AppState, bucket_type: &[u8]) -> Result<(), ApiError> {
    // The type's own properties: any bucket of it would do.
    api.membership.bucket_props(bucket_type, b"").map(drop).map_err(ApiError::from)
}

/// `GET /buckets`, `GET /types/T/buckets`.
pub async fn buckets(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let Some(Listed::Buckets { bucket_type }) = listing_target(uri.path()) else {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no such resource: {}", uri.path())));
    };
    check_name("bucket type", &bucket_type)?;
    let timeout = timeout(&params)?;
    check_bucket_type(&api, &bucket_type)?;
    let Some(mode) = mode(param(&params, "buckets")) else {
        return Err(ApiError::bad_request("list buckets with ?buckets=true or ?buckets=stream"));
    };
    let query = CoverageQuery::Buckets { bucket_type: Bytes::from(bucket_type) };
    list(&api, query, mode, timeout, "buckets").await
}

/// `GET /buckets/B/keys`, `GET /types/T/buckets/B/keys`, `GET /riak/B`.
pub async fn keys(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let Some(Listed::Keys { bucket_type, bucket }) = listing_target(uri.path()) else {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no such resource: {}", uri.path())));
    };
    check_name("bucket type", &bucket_type)?;
    check_name("bucket", &bucket)?;
    let timeout = timeout(&params)?;
    check_bucket_type(&api, &bucket_type)?;
    let Some(mode) = mode(param(&params, "keys")) else {
        // Riak: no keys asked for, no keys sent (and no properties here).
        return Ok(json_response(Body::from("{}")));
    };
    let query = CoverageQuery::Keys { bucket_type: Bytes::from(bucket_type), bucket: Bytes::from(bucket) };
    list(&api, query, mode, timeout, "keys").await
}

fn json_response(body: Body) -> Response {
    ([(http::header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn list(
    api: &AppState,
    query: CoverageQuery,
    mode: Mode,
    timeout: Duration,
    field: &'static str,
) -> Result<Response, ApiError> {
    let listing = api.coverage.start(query, Instant::now() + timeout)?;
    match mode {
        Mode::Whole => whole(listing, field).await.map(|body| json_response(Body::from(body))),
        Mode::Stream => Ok(json_response(Body::from_stream(stream(listing, field)))),
    }
}

/// The whole listing as one JSON object, bounded.
async fn whole(mut listing: Listing, field: &str) -> Result<Vec<u8>, ApiError> {
    let mut body = format!("{{\"{field}\":[").into_bytes();
    let mut first = true;
    while let Some(page) = listing.next().await {
        for name in page? {
            if !first {
                body.push(b',');
            }
            first = false;
            push_json_string(&mut body, &name)?;
            if body.len() > LIST_BODY_MAX_BYTES {
                return Err(ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    format!(
                        "the {field} listing is larger than {LIST_BODY_MAX_BYTES} bytes, the most {field}=true \
                         answers with; use {field}=stream"
                    ),
                ));
            }
        }
    }
    body.extend_from_slice(b"]}");
    Ok(body)
}

/// What the streamed body still has to send.
enum Streaming {
    Pages(Listing),
    Done,
}

/// The listing as a chunked body of JSON objects, one per page; a failure
/// ends it with an error object.
fn stream(listing: Listing, field: &'static str) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(Streaming::Pages(listing), move |state| async move {
        match state {
            Streaming::Done => None,
            Streaming::Pages(mut listing) => {
                let failure = |e: ApiError| {
                    let shown = if e.code().is_internal() {
                        "internal error; the node's log has the details"
                    } else {
                        e.message()
                    };
                    let mut object = b"{\"error\":".to_vec();
                    push_json_string(&mut object, shown.as_bytes()).expect("an error message is text");
                    object.push(b'}');
                    tracing::warn!(error = %e.message(), "streamed listing failed; ending it with an error object");
                    (Ok(Bytes::from(object)), Streaming::Done)
                };
                match listing.next().await {
                    None => Some((Ok(Bytes::from(format!("{{\"{field}\":[]}}"))), Streaming::Done)),
                    Some(Err(e)) => Some(failure(e.into())),
                    Some(Ok(page)) => {
                        let mut object = format!("{{\"{field}\":[").into_bytes();
                        for (i, name) in page.iter().enumerate() {
                            if i > 0 {
                                object.push(b',');
                            }
                            if let Err(e) = push_json_string(&mut object, name) {
                                return Some(failure(e));
                            }
                        }
                        object.extend_from_slice(b"]}");
                        Some((Ok(Bytes::from(object)), Streaming::Pages(listing)))
                    }
                }
            }
        }
    })
}

/// Appends `name` as a JSON string. Braces are escaped too (see the module
/// comment); a name that is not UTF-8 is an error, as in Riak.
pub(crate) fn push_json_string(out: &mut Vec<u8>, name: &[u8]) -> Result<(), ApiError> {
    let text = std::str::from_utf8(name).map_err(|_| {
        let hex: String = name.iter().map(|b| format!("{b:02x}")).collect();
        ApiError::new(
            ErrorCode::Internal,
            format!("a listed name is not UTF-8 (hex {hex}); a JSON listing cannot carry it, as in Riak"),
        )
    })?;
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '{' | '}' => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::coordinator::coverage::testing::one_node;

    fn json(name: &[u8]) -> Result<String, ApiError> {
        let mut out = Vec::new();
        push_json_string(&mut out, name)?;
        Ok(String::from_utf8(out).unwrap())
    }

    fn listing(failing: Option<u32>) -> Listing {
        let query = CoverageQuery::Keys { bucket_type: Bytes::from("t"), bucket: Bytes::from("b") };
        one_node(failing).start(query, Instant::now() + Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn a_stream_ends_with_an_empty_object_or_an_error_object() {
        let chunks: Vec<_> = stream(listing(None), "keys").collect().await;
        let text: Vec<String> = chunks.into_iter().map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap()).collect();
        assert_eq!(text.len(), 5, "{text:?}");
        assert_eq!(text.last().unwrap(), "{\"keys\":[]}");
        let mut keys: Vec<String> = text[..4]
            .iter()
            .map(|t| serde_json::from_str::<serde_json::Value>(t).unwrap()["keys"][0].as_str().unwrap().to_owned())
            .collect();
        keys.sort();
        assert_eq!(keys, ["k0", "k1", "k2", "k3"]);

        let chunks: Vec<_> = stream(listing(Some(2)), "keys").collect().await;
        let error = chunks.last().unwrap();
        let error: serde_json::Value = serde_json::from_slice(error.as_ref().unwrap()).unwrap();
        assert!(error["error"].as_str().unwrap().contains("partition 2"), "{error}");
        assert!(chunks.iter().all(|c| c.as_ref().map_or(true, |b| b.as_ref() != b"{\"keys\":[]}")), "no clean end");
    }

    #[tokio::test]
    async fn a_whole_listing_fails_with_a_503_when_a_holder_fails() {
        let body = whole(listing(None), "keys").await.unwrap();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["keys"].as_array().unwrap().len(), 4);
        let e = whole(listing(Some(1)), "keys").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.message().contains("partition 1"), "{}", e.message());
    }

    #[test]
    fn names_are_json_strings_that_never_contain_a_brace() {
        for name in ["plain", "a\"b\\c", "{x}", "tab\there\n", "\u{1}", "ünïcødé ☃", ""] {
            let encoded = json(name.as_bytes()).unwrap();
            assert!(!encoded.contains('}') && !encoded.contains('{'), "{encoded}");
            assert_eq!(serde_json::from_str::<String>(&encoded).unwrap(), name);
        }
        let e = json(b"\xff\xfe").unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal);
    }

    #[test]
    fn paths_name_listings_and_nothing_else() {
        assert_eq!(listing_target("/buckets"), Some(Listed::Buckets { bucket_type: b"default".to_vec() }));
        assert_eq!(
            listing_target("/types/t%20x/buckets/b%2Fc/keys"),
            Some(Listed::Keys { bucket_type: b"t x".to_vec(), bucket: b"b/c".to_vec() })
        );
        assert_eq!(
            listing_target("/riak/b"),
            Some(Listed::Keys { bucket_type: b"default".to_vec(), bucket: b"b".to_vec() })
        );
        for other in ["/buckets/", "/buckets/b", "/buckets/b/keys/k", "/types/t", "/riak/b/k", "/store/x"] {
            assert_eq!(listing_target(other), None, "{other}");
        }
    }

    #[test]
    fn parameters_are_read_as_riak_reads_them() {
        let p = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(mode(param(&p(&[("keys", "true"), ("keys", "stream")]), "keys")), Some(Mode::Whole));
        assert_eq!(mode(param(&p(&[("keys", "stream")]), "keys")), Some(Mode::Stream));
        assert_eq!(mode(param(&p(&[("keys", "false")]), "keys")), None);
        assert_eq!(timeout(&p(&[])).unwrap(), DEFAULT_TIMEOUT);
        assert_eq!(timeout(&p(&[("timeout", "1500")])).unwrap(), Duration::from_millis(1500));
        for bad in ["x", "-1", "1.5", ""] {
            let e = timeout(&p(&[("timeout", bad)])).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{bad}");
        }
    }
}
