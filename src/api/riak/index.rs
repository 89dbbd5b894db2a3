//! Riak's secondary-index queries (`riak_kv_wm_index`):
//!
//! * `GET /buckets/B/index/FIELD/VALUE`: the keys whose object has VALUE in
//!   index FIELD (`NAME_bin` or `NAME_int`);
//! * `GET /buckets/B/index/FIELD/START/END`: terms from START to END, both
//!   included (integers numerically, binaries bytewise);
//! * `FIELD` `$key` (keys from START to END) and `$bucket` (every key);
//! * the same under `/types/T/buckets/B/...`.
//!
//! The query runs over a covering set of replicas, as a listing does
//! (`coordinator::coverage`), each holder reading its own index. Parameters
//! as Riak's: `return_terms=true` answers `{"results":[{"TERM":"KEY"}]}`
//! instead of `{"keys":[...]}`, for range queries only (an equality query
//! answers keys, as Riak's `riak_index:return_terms/2` decides);
//! `max_results=N` answers the first N by (term, key) and a `continuation`
//! whenever the page is full (even if nothing follows, as Riak's
//! `make_continuation`), which `continuation=C` takes back; `term_regex=RE`
//! keeps the terms it matches (Rust's `regex` syntax, no lookaround or
//! backreferences; refused on `_int` fields as in Riak); `stream=true`
//! answers in `multipart/mixed` parts as results arrive; `timeout=MS` (0 is
//! Riak's `infinity`: at most [`NO_TIMEOUT`] here); `pagination_sort` is
//! checked and ignored (whole answers are always sorted here).
//!
//! A whole answer is sorted by (term, key) and bounded
//! ([`listing::LIST_BODY_MAX_BYTES`]: above it a 413 that points to
//! `max_results` and `stream`). A streamed answer without `max_results` is
//! sent page by page as holders answer, each part sorted, the parts in no
//! order (Riak's are not either); with `max_results` the page is merged
//! first, then sent. A streamed failure ends the body with an
//! `{"error":...}` part, as Riak's `stream_error`.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Uri;
use rand::distr::{Alphanumeric, SampleString};
use tokio::time::Instant;

use super::path::{IndexPath, index_path};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::listing::{self, DEFAULT_TIMEOUT, LIST_BODY_MAX_BYTES, param};
use crate::coordinator::coverage::{CoverageQuery, Listing, sorted};
use crate::core::index::{IndexQuery, IndexRequest, Term};
use crate::error::ErrorCode;

/// `timeout=0`, Riak's `infinity`: a day, so that a query still ends.
pub const NO_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
/// The most `max_results` takes: a page is merged in memory.
pub const MAX_RESULTS_LIMIT: u32 = 100_000;
/// Continuations carry this version byte, then the entry.
const CONTINUATION_V1: u8 = 1;

/// What the query string asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Options {
    return_terms: bool,
    max_results: Option<u32>,
    continuation: Option<String>,
    stream: bool,
    timeout: Duration,
    term_regex: Option<String>,
}

/// A boolean as Riak's `normalize_boolean` reads it.
fn boolean(params: &[(String, String)], name: &str) -> Result<bool, ApiError> {
    match param(params, name).map(str::to_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!("Invalid {name}. \"{other}\" is not a boolean"))),
    }
}

fn options(params: &[(String, String)]) -> Result<Options, ApiError> {
    boolean(params, "pagination_sort")?;
    let max_results = match param(params, "max_results") {
        None => None,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if n > 0 && n <= MAX_RESULTS_LIMIT => Some(n),
            Ok(n) if n > MAX_RESULTS_LIMIT => {
                return Err(ApiError::bad_request(format!(
                    "Invalid max_results. {n} is above the limit of {MAX_RESULTS_LIMIT}"
                )));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "Invalid max_results. \"{text}\" is not a positive integer"
                )));
            }
        },
    };
    let timeout = match param(params, "timeout") {
        None => DEFAULT_TIMEOUT,
        Some(text) => match text.parse::<u32>() {
            Ok(0) => NO_TIMEOUT,
            Ok(ms) => Duration::from_millis(u64::from(ms)),
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "Bad timeout value \"{text}\". Must be a non-negative integer"
                )));
            }
        },
    };
    Ok(Options {
        return_terms: boolean(params, "return_terms")?,
        max_results,
        continuation: param(params, "continuation").map(str::to_owned),
        stream: param(params, "stream") == Some("true"),
        timeout,
        term_regex: param(params, "term_regex").map(str::to_owned),
    })
}

/// The continuation of a page that ends with `entry`: opaque to clients.
fn continuation(entry: &[u8]) -> String {
    let mut raw = Vec::with_capacity(entry.len() + 1);
    raw.push(CONTINUATION_V1);
    raw.extend_from_slice(entry);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The entry a continuation resumes after; it must be one of `query`'s.
fn resume_after(text: &str, query: &IndexQuery) -> Result<Bytes, ApiError> {
    let bad = || ApiError::bad_request(format!("Invalid continuation {text:?}: not one this query returned"));
    let raw = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|_| bad())?;
    match raw.split_first() {
        Some((&CONTINUATION_V1, entry)) if query.decode_entry(entry).is_some() => Ok(Bytes::copy_from_slice(entry)),
        _ => Err(bad()),
    }
}

/// The request a path and its options name, checked.
fn request(path: IndexPath, options: &Options) -> Result<IndexRequest, ApiError> {
    let field = std::str::from_utf8(&path.field)
        .map_err(|_| ApiError::bad_request("Invalid query: the index name is not UTF-8"))?;
    let (start, end) = match (field, path.terms.as_slice()) {
        ("$bucket", []) | ("$bucket", [_]) => (Vec::new(), Vec::new()),
        (_, [one]) => (one.clone(), one.clone()),
        (_, [start, end]) => (start.clone(), end.clone()),
        _ => {
            return Err(ApiError::bad_request(
                "Invalid query: give one term (/index/FIELD/VALUE) or a range (/index/FIELD/START/END)",
            ));
        }
    };
    IndexRequest::new(path.bucket_type, path.bucket, field, &start, &end, options.term_regex.as_deref())
        .map_err(ApiError::bad_request)
}

/// `GET /buckets/B/index/...`, `GET /types/T/buckets/B/index/...`.
pub async fn query(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let Some(path) = index_path(uri.path()) else {
        return Err(ApiError::new(ErrorCode::NotFound, format!("no such resource: {}", uri.path())));
    };
    listing::check_name("bucket type", &path.bucket_type)?;
    listing::check_name("bucket", &path.bucket)?;
    let options = options(&params)?;
    let request = request(path, &options)?;
    let after = options.continuation.as_deref().map(|c| resume_after(c, &request.query)).transpose()?;
    listing::check_bucket_type(&api, &request.bucket_type)?;
    let query = request.query.clone();
    let return_terms = options.return_terms && !query.is_equality();
    let max = options.max_results;
    let deadline = Instant::now() + options.timeout;
    let listing = api.coverage.start(CoverageQuery::Index { request, after, max }, deadline)?;
    let shape = Shape { query, return_terms, max: max.map(|m| m as usize) };
    if options.stream {
        let boundary = api.env.entropy.with(|rng| Alphanumeric.sample_string(rng, 28));
        let content_type = format!("multipart/mixed;boundary={boundary}");
        let body = Body::from_stream(stream(listing, shape, boundary));
        return Ok(([(http::header::CONTENT_TYPE, content_type)], body).into_response());
    }
    let entries = sorted(listing, shape.max, LIST_BODY_MAX_BYTES).await?;
    let body = shape.results(&entries, shape.continuation(&entries).as_deref())?;
    if body.len() > LIST_BODY_MAX_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the answer is larger than {LIST_BODY_MAX_BYTES} bytes; ask for pages (max_results) or stream it"),
        ));
    }
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// How a query's entries are written.
struct Shape {
    query: IndexQuery,
    return_terms: bool,
    max: Option<usize>,
}

impl Shape {
    /// `{"keys":[...]}` or `{"results":[{"TERM":"KEY"},...]}`, with
    /// `"continuation"` when one is given.
    fn results(&self, entries: &[Bytes], continuation: Option<&str>) -> Result<Vec<u8>, ApiError> {
        let mut out = if self.return_terms { b"{\"results\":[".to_vec() } else { b"{\"keys\":[".to_vec() };
        for (i, entry) in entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let (term, key) = self.query.decode_entry(entry).ok_or_else(|| {
                ApiError::new(ErrorCode::Internal, "a holder answered an entry that is not one of the query's")
            })?;
            if self.return_terms {
                out.push(b'{');
                match term {
                    Term::Int(n) => listing::push_json_string(&mut out, n.to_string().as_bytes())?,
                    Term::Bin(b) => listing::push_json_string(&mut out, &b)?,
                }
                out.push(b':');
                listing::push_json_string(&mut out, &key)?;
                out.push(b'}');
            } else {
                listing::push_json_string(&mut out, &key)?;
            }
        }
        out.push(b']');
        if let Some(next) = continuation {
            out.extend_from_slice(b",\"continuation\":");
            listing::push_json_string(&mut out, next.as_bytes())?;
        }
        out.push(b'}');
        Ok(out)
    }

    /// A full page's continuation (Riak gives one whenever the page holds
    /// `max_results`, even if nothing follows).
    fn continuation(&self, entries: &[Bytes]) -> Option<String> {
        match (self.max, entries.last()) {
            (Some(max), Some(last)) if entries.len() == max => Some(continuation(last)),
            _ => None,
        }
    }
}

/// One `multipart/mixed` part holding a JSON object.
fn part(boundary: &str, json: &[u8]) -> Bytes {
    let mut out = format!("\r\n--{boundary}\r\nContent-Type: application/json\r\n\r\n").into_bytes();
    out.extend_from_slice(json);
    Bytes::from(out)
}

/// The closing parts: a continuation when the page was full, then the end.
fn closing(boundary: &str, next: Option<String>) -> Bytes {
    let mut out = Vec::new();
    if let Some(next) = next {
        let mut json = b"{\"continuation\":".to_vec();
        listing::push_json_string(&mut json, next.as_bytes()).expect("a continuation is text");
        json.push(b'}');
        out.extend_from_slice(&part(boundary, &json));
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Bytes::from(out)
}

/// The error part that ends a failed stream, and the end.
fn failure(boundary: &str, e: ApiError) -> Bytes {
    tracing::warn!(error = %e.message(), "streamed index query failed; ending it with an error part");
    let shown = if e.code().is_internal() { "internal error; the node's log has the details" } else { e.message() };
    let mut json = b"{\"error\":".to_vec();
    listing::push_json_string(&mut json, shown.as_bytes()).expect("an error message is text");
    json.push(b'}');
    let mut out = part(boundary, &json).to_vec();
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    Bytes::from(out)
}

enum Streaming {
    /// Pages as they come (no `max_results`).
    Pages(Listing),
    /// A page of `max_results`, merged before it is sent.
    Page(Listing),
    Done,
}

fn stream(
    listing: Listing,
    shape: Shape,
    boundary: String,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let first = if shape.max.is_some() { Streaming::Page(listing) } else { Streaming::Pages(listing) };
    futures::stream::unfold((first, shape, boundary), |(state, shape, boundary)| async move {
        let (chunk, next) = match state {
            Streaming::Done => return None,
            Streaming::Page(listing) => match sorted(listing, shape.max, LIST_BODY_MAX_BYTES).await {
                Err(e) => (failure(&boundary, e.into()), Streaming::Done),
                Ok(entries) => match shape.results(&entries, None) {
                    Err(e) => (failure(&boundary, e), Streaming::Done),
                    Ok(json) => {
                        let mut out = if entries.is_empty() { Vec::new() } else { part(&boundary, &json).to_vec() };
                        out.extend_from_slice(&closing(&boundary, shape.continuation(&entries)));
                        (Bytes::from(out), Streaming::Done)
                    }
                },
            },
            Streaming::Pages(mut listing) => match listing.next().await {
                None => (closing(&boundary, None), Streaming::Done),
                Some(Err(e)) => (failure(&boundary, e.into()), Streaming::Done),
                Some(Ok(page)) => match shape.results(&page, None) {
                    Err(e) => (failure(&boundary, e), Streaming::Done),
                    Ok(json) => (part(&boundary, &json), Streaming::Pages(listing)),
                },
            },
        };
        Some((Ok(chunk), (next, shape, boundary)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn options_are_checked_with_riaks_messages() {
        let o = options(&params(&[("return_terms", "TRUE"), ("max_results", "2"), ("timeout", "0")])).unwrap();
        assert!(o.return_terms);
        assert_eq!(o.max_results, Some(2));
        assert_eq!(o.timeout, NO_TIMEOUT);
        for (bad, says) in [
            (("return_terms", "yes"), "Invalid return_terms. \"yes\" is not a boolean"),
            (("max_results", "0"), "Invalid max_results. \"0\" is not a positive integer"),
            (("max_results", "-1"), "Invalid max_results"),
            (("max_results", "1000001"), "above the limit"),
            (("timeout", "soon"), "Bad timeout value \"soon\""),
            (("pagination_sort", "maybe"), "Invalid pagination_sort"),
        ] {
            let e = options(&params(&[bad])).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest);
            assert!(e.message().contains(says), "{}", e.message());
        }
    }

    #[test]
    fn continuations_round_trip_and_forged_ones_are_refused() {
        let query = IndexQuery::Field { field: "n_int".into(), start: Term::Int(1), end: Term::Int(9) };
        let entry = crate::core::index::entry(&Term::Int(5), b"k");
        assert_eq!(resume_after(&continuation(&entry), &query).unwrap(), Bytes::from(entry));
        for forged in ["", "!!", "AQ", "g2gCYgAAA-lt"] {
            let e = resume_after(forged, &query).unwrap_err();
            assert_eq!(e.code(), ErrorCode::BadRequest, "{forged}");
        }
    }

    #[test]
    fn an_equality_query_takes_one_term_and_a_range_two() {
        let path = |terms: &[&str]| IndexPath {
            bucket_type: "default".into(),
            bucket: "b".into(),
            field: b"n_bin".to_vec(),
            terms: terms.iter().map(|t| t.as_bytes().to_vec()).collect(),
        };
        let o = options(&[]).unwrap();
        assert!(request(path(&["a"]), &o).unwrap().query.is_equality());
        assert!(!request(path(&["a", "b"]), &o).unwrap().query.is_equality());
        assert_eq!(request(path(&[]), &o).unwrap_err().code(), ErrorCode::BadRequest);
        assert_eq!(request(path(&["a", "b", "c"]), &o).unwrap_err().code(), ErrorCode::BadRequest);
    }
}
