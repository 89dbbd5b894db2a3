//! Riak's object headers, both ways, as `riak_kv_wm_object` reads and writes
//! them: Content-Type (its media type and `charset`), Content-Encoding,
//! Content-Language, `X-Riak-Meta-*`, `Link`, `X-Riak-Index-*`; and what a
//! read adds: ETag (the value's vtag), Last-Modified, and for siblings a
//! `multipart/mixed` body whose parts carry the same headers.

use std::fmt::Write as _;

use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use bytes::Bytes;
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};

use super::path::{Scheme, quote, unquote};
use crate::api::ApiError;
use crate::api::multipart::http_date;
use crate::core::object::{Link, Metadata, Sibling};
use crate::core::vclock::{Dot, VersionVector};
use crate::env::Entropy;
use crate::error::ErrorCode;

const META_PREFIX: &str = "x-riak-meta-";
const INDEX_PREFIX: &str = "x-riak-index-";
pub const VCLOCK_HEADER: &str = "x-riak-vclock";
pub const DELETED_HEADER: &str = "x-riak-deleted";
/// Riak's answer when an object has no Content-Type (never the case for
/// values written here; kept for values written through `/store`).
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// A write's Content-Type: its media type, and the `charset` parameter.
/// Missing is a 400 and a media type that is not `type/subtype` a 415, with
/// Riak's texts.
pub fn content_type(headers: &HeaderMap) -> Result<(String, Option<String>), ApiError> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .ok_or_else(|| ApiError::bad_request("Missing Content-Type request header"))?
        .to_str()
        .map_err(|_| ApiError::bad_request("Content-Type is not valid text"))?;
    let mut parts = raw.split(';').map(str::trim);
    let media = parts.next().unwrap_or_default().to_owned();
    let valid = media.split('/').filter(|p| !p.is_empty()).count() == 2 && media.matches('/').count() == 1;
    if !valid {
        return Err(ApiError::new(
            ErrorCode::UnsupportedMediaType,
            format!("\"{media}\" is not a valid media type for the Content-type header."),
        ));
    }
    let charset = parts
        .filter_map(|p| p.split_once('='))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .map(|(_, value)| value.trim().trim_matches('"').to_owned());
    Ok((media, charset))
}

/// Everything but the Content-Type a write stores beside its value.
/// `bucket` is the request's bucket (the one `rel="up"` link allowed).
pub fn metadata(headers: &HeaderMap, charset: Option<String>, bucket: &[u8]) -> Result<Metadata, ApiError> {
    let text = |name: HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| ApiError::bad_request(format!("{name} is not valid text")))
            })
            .transpose()
    };
    let mut user_meta = Vec::new();
    let mut indexes = Vec::new();
    for (name, value) in headers {
        let name = name.as_str();
        let value = || value.to_str().map_err(|_| ApiError::bad_request(format!("{name} is not valid text")));
        if let Some(field) = name.strip_prefix(META_PREFIX) {
            if !field.is_empty() {
                user_meta.push((field.to_owned(), value()?.to_owned()));
            }
        } else if let Some(field) = name.strip_prefix(INDEX_PREFIX) {
            // Riak splits a header's values on ", " (no quoted strings).
            for v in value()?.split(", ") {
                indexes.push(index_entry(field, v)?);
            }
        }
    }
    user_meta.sort();
    user_meta.dedup_by(|a, b| a.0 == b.0);
    indexes.sort();
    indexes.dedup();
    Ok(Metadata {
        charset,
        content_encoding: text(header::CONTENT_ENCODING)?,
        content_language: text(header::CONTENT_LANGUAGE)?,
        user_meta,
        links: links(headers, bucket)?,
        indexes,
    })
}

/// One index entry, checked as `riak_index:parse_fields`: the name ends in
/// `_bin` or `_int`, an `_int` value is an integer (stored normalised, so
/// `007` is `7`).
fn index_entry(field: &str, value: &str) -> Result<(String, String), ApiError> {
    if field.ends_with("_bin") && field.len() > 4 {
        Ok((field.to_owned(), value.to_owned()))
    } else if field.ends_with("_int") && field.len() > 4 {
        let n: i128 = value
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request(format!("Could not parse field '{field}', value '{value}'.")))?;
        Ok((field.to_owned(), n.to_string()))
    } else {
        Err(ApiError::bad_request(format!("Invalid field name: \"{field}\" (an index name ends in _bin or _int)")))
    }
}

/// The `Link` headers of a write: `</buckets/B/keys/K>; riaktag="T"` (or
/// the legacy `</riak/B/K>; riaktag="T"`), comma-separated; one
/// `</buckets/B>; rel="up"` naming the object's own bucket is allowed and
/// dropped (every read adds it back). Anything else is a 400, as in Riak.
pub fn links(headers: &HeaderMap, bucket: &[u8]) -> Result<Vec<Link>, ApiError> {
    let mut links = Vec::new();
    for value in headers.get_all(header::LINK) {
        let value = value.to_str().map_err(|_| ApiError::bad_request("Link is not valid text"))?;
        for one in value.split(',').map(str::trim).filter(|l| !l.is_empty()) {
            match parse_link(one) {
                Some(ParsedLink::Up(b)) if b == bucket => {}
                Some(ParsedLink::Key(link)) => links.push(link),
                _ => {
                    return Err(ApiError::bad_request(
                        "Invalid Link header. Links must be of the form </buckets/BUCKET/keys/KEY>; riaktag=\"TAG\"",
                    ));
                }
            }
        }
    }
    Ok(links)
}

enum ParsedLink {
    Up(Vec<u8>),
    Key(Link),
}

fn parse_link(text: &str) -> Option<ParsedLink> {
    let rest = text.strip_prefix('<')?;
    let (target, params) = rest.split_once('>')?;
    let (param, value) = params.trim_start().strip_prefix(';')?.trim().split_once('=')?;
    let value = unquote(value.trim().strip_prefix('"')?.strip_suffix('"')?);
    let segments: Vec<&str> = target.strip_prefix('/')?.split('/').collect();
    match (param.trim(), segments.as_slice()) {
        ("rel", ["buckets", b] | ["riak", b]) if value == b"up" => Some(ParsedLink::Up(unquote(b))),
        ("riaktag", ["buckets", b, "keys", k] | ["riak", b, k]) => Some(ParsedLink::Key(Link {
            bucket: Bytes::from(unquote(b)),
            key: Bytes::from(unquote(k)),
            tag: Bytes::from(value),
        })),
        _ => None,
    }
}

/// The `Link` header value of a read: the `up` link to the bucket, then the
/// object's links, in the request's scheme.
fn link_header(scheme: Scheme, bucket: &[u8], links: &[Link]) -> String {
    let mut out = match scheme {
        Scheme::Legacy => format!("</riak/{}>; rel=\"up\"", quote(bucket)),
        _ => format!("</buckets/{}>; rel=\"up\"", quote(bucket)),
    };
    for l in links {
        let (b, k, t) = (quote(&l.bucket), quote(&l.key), quote(&l.tag));
        let _ = match scheme {
            Scheme::Legacy => write!(out, ", </riak/{b}/{k}>; riaktag=\"{t}\""),
            _ => write!(out, ", </buckets/{b}/keys/{k}>; riaktag=\"{t}\""),
        };
    }
    out
}

/// A value's vtag (its ETag, and the `?vtag=` that picks it among
/// siblings): derived from the value's dot, so every replica and every read
/// gives one value the same vtag, and a new write a new one.
pub fn vtag(dot: Dot) -> String {
    let mut hash = Sha256::new();
    hash.update(b"vinzclortho vtag");
    hash.update(dot.actor.to_be_bytes());
    hash.update(dot.counter.to_be_bytes());
    base62(u128::from_be_bytes(hash.finalize()[..16].try_into().expect("16 bytes")))
}

/// The ETag of a reply with siblings: derived from the clock, as Riak
/// derives it from the vclock.
pub fn clock_etag(clock: &VersionVector) -> String {
    let mut hash = Sha256::new();
    hash.update(b"vinzclortho clock etag");
    for (actor, counter) in clock.iter() {
        hash.update(actor.to_be_bytes());
        hash.update(counter.to_be_bytes());
    }
    base62(u128::from_be_bytes(hash.finalize()[..16].try_into().expect("16 bytes")))
}

fn base62(mut n: u128) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 62) as usize]);
        n /= 62;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII digits")
}

/// The headers of one value, on a single-value read and in each part of a
/// siblings body: Content-Type (with charset), Content-Encoding,
/// Content-Language, Link, ETag, Last-Modified, `X-Riak-Meta-*`,
/// `X-Riak-Index-*`. In order, as (name, value).
pub fn value_headers(scheme: Scheme, bucket: &[u8], sibling: &Sibling) -> Vec<(HeaderName, String)> {
    let content = &sibling.content;
    let meta = &content.meta;
    let media = if content.content_type.is_empty() { DEFAULT_CONTENT_TYPE } else { &content.content_type };
    let mut out = vec![(
        header::CONTENT_TYPE,
        match &meta.charset {
            Some(cs) => format!("{media}; charset={cs}"),
            None => media.to_owned(),
        },
    )];
    if let Some(enc) = &meta.content_encoding {
        out.push((header::CONTENT_ENCODING, enc.clone()));
    }
    if let Some(lang) = &meta.content_language {
        out.push((header::CONTENT_LANGUAGE, lang.clone()));
    }
    out.push((header::LINK, link_header(scheme, bucket, &meta.links)));
    out.push((header::ETAG, format!("\"{}\"", vtag(sibling.dot))));
    out.push((header::LAST_MODIFIED, http_date(content.last_modified_ms)));
    for (name, value) in &meta.user_meta {
        if let Ok(name) = HeaderName::try_from(format!("{META_PREFIX}{name}")) {
            out.push((name, value.clone()));
        }
    }
    // Several values of one index go in one header, as Riak's clients
    // split them on ", ".
    let mut i = 0;
    while i < meta.indexes.len() {
        let field = &meta.indexes[i].0;
        let values: Vec<&str> =
            meta.indexes[i..].iter().take_while(|(f, _)| f == field).map(|(_, v)| v.as_str()).collect();
        i += values.len();
        if let Ok(name) = HeaderName::try_from(format!("{INDEX_PREFIX}{field}")) {
            out.push((name, values.join(", ")));
        }
    }
    out
}

/// Sets the headers of one value on a response.
pub fn set_value_headers(headers: &mut HeaderMap, scheme: Scheme, bucket: &[u8], sibling: &Sibling) {
    for (name, value) in value_headers(scheme, bucket, sibling) {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(name, value);
        }
    }
}

/// A `multipart/mixed` body with one part per sibling, each with its own
/// headers, as `riak_kv_wm_utils:multipart_encode_body` writes it. Returns
/// the Content-Type (with the boundary) and the body.
pub fn multipart(scheme: Scheme, bucket: &[u8], siblings: &[&Sibling], entropy: &Entropy) -> (String, Vec<u8>) {
    let boundary = loop {
        let candidate = entropy.with(|rng| Alphanumeric.sample_string(rng, 27));
        let needle = candidate.as_bytes();
        if !siblings.iter().any(|s| s.content.value.windows(needle.len()).any(|w| w == needle)) {
            break candidate;
        }
    };
    let mut body = Vec::with_capacity(siblings.iter().map(|s| s.content.value.len() + 300).sum());
    for s in siblings {
        body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        for (name, value) in value_headers(scheme, bucket, s) {
            body.extend_from_slice(format!("{}: {value}\r\n", canonical(name.as_str())).as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(&s.content.value);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed; boundary={boundary}"), body)
}

/// `content-type` as `Content-Type`: inside a body no HTTP library
/// normalises names, and Riak writes them capitalised.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        out.push(if upper { c.to_ascii_uppercase() } else { c });
        upper = c == '-';
    }
    match out.as_str() {
        "Etag" => "ETag".to_owned(),
        _ => out,
    }
}

/// The text list of vtags Riak sends for siblings to a client that does
/// not accept `multipart/mixed`.
pub fn sibling_list(siblings: &[&Sibling]) -> String {
    let mut out = String::from("Siblings:\n");
    for s in siblings {
        out.push_str(&vtag(s.dot));
        out.push('\n');
    }
    out
}

/// Whether the client prefers `multipart/mixed` over `text/plain` (Riak's
/// `webmachine_util:choose_media_type` among those two): by q-value, ties
/// to the more specific match, and `text/plain` when neither is named.
pub fn prefers_multipart(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else { return false };
    let quality = |wanted: &str| -> f32 {
        let (kind, _) = wanted.split_once('/').unwrap_or((wanted, ""));
        let mut best: Option<(u8, f32)> = None;
        for range in accept.split(',') {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or_default().to_ascii_lowercase();
            let q =
                params.filter_map(|p| p.strip_prefix("q=")).find_map(|q| q.trim().parse::<f32>().ok()).unwrap_or(1.0);
            let specificity = if media == wanted {
                3
            } else if media == format!("{kind}/*") {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, q));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let (multipart, plain) = (quality("multipart/mixed"), quality("text/plain"));
    multipart > 0.0 && multipart > plain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::object::Content;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::try_from(*k).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn content_type_needs_a_media_type_and_keeps_the_charset() {
        assert_eq!(
            content_type(&headers(&[("content-type", "text/plain; charset=UTF-8")])).unwrap(),
            ("text/plain".to_owned(), Some("UTF-8".to_owned()))
        );
        assert_eq!(content_type(&headers(&[])).unwrap_err().message(), "Missing Content-Type request header");
        let e = content_type(&headers(&[("content-type", "plain")])).unwrap_err();
        assert_eq!(e.code(), ErrorCode::UnsupportedMediaType);
    }

    #[test]
    fn metadata_from_riak_headers() {
        let h = headers(&[
            ("x-riak-meta-color", "blue"),
            ("x-riak-index-age_int", "042, 7"),
            ("x-riak-index-name_bin", "ann"),
            ("link", "</buckets/b>; rel=\"up\", </buckets/people/keys/bob+smith>; riaktag=\"friend\""),
            ("link", "</riak/people/al>; riaktag=\"boss\""),
            ("content-encoding", "gzip"),
        ]);
        let meta = metadata(&h, Some("utf-8".into()), b"b").unwrap();
        assert_eq!(meta.user_meta, vec![("color".to_owned(), "blue".to_owned())]);
        assert_eq!(
            meta.indexes,
            vec![("age_int".into(), "42".into()), ("age_int".into(), "7".into()), ("name_bin".into(), "ann".into())]
        );
        assert_eq!(meta.links.len(), 2);
        assert_eq!(&meta.links[0].key[..], b"bob smith");
        assert_eq!(meta.content_encoding.as_deref(), Some("gzip"));
        for bad in [
            ("x-riak-index-age", "1"),
            ("x-riak-index-age_int", "old"),
            ("link", "<http://example.com>; rel=\"x\""),
            ("link", "</buckets/other>; rel=\"up\""),
        ] {
            assert_eq!(metadata(&headers(&[bad]), None, b"b").unwrap_err().code(), ErrorCode::BadRequest, "{bad:?}");
        }
    }

    #[test]
    fn a_value_answers_with_its_headers_and_round_trips() {
        let h = headers(&[
            ("x-riak-meta-color", "blue"),
            ("x-riak-index-age_int", "42, 7"),
            ("link", "</buckets/people/keys/bob>; riaktag=\"friend\""),
        ]);
        let meta = metadata(&h, Some("utf-8".into()), b"b").unwrap();
        let sibling = Sibling {
            dot: Dot::new(5, 9),
            content: Content { value: "v".into(), content_type: "text/plain".into(), last_modified_ms: 0, meta },
        };
        let mut out = HeaderMap::new();
        set_value_headers(&mut out, Scheme::Buckets, b"b", &sibling);
        assert_eq!(out["content-type"], "text/plain; charset=utf-8");
        assert_eq!(out["x-riak-meta-color"], "blue");
        assert_eq!(out["x-riak-index-age_int"], "42, 7");
        assert_eq!(out["link"], "</buckets/b>; rel=\"up\", </buckets/people/keys/bob>; riaktag=\"friend\"");
        assert_eq!(out["etag"], format!("\"{}\"", vtag(sibling.dot)).as_str());
        // What a read sent, written back, stores the same metadata.
        let again = metadata(&out, Some("utf-8".into()), b"b").unwrap();
        assert_eq!(again, sibling.content.meta);
        assert_ne!(vtag(Dot::new(5, 9)), vtag(Dot::new(5, 10)));
    }

    #[test]
    fn accept_negotiation_between_the_two_sibling_forms() {
        let prefers = |accept: &str| prefers_multipart(&headers(&[("accept", accept)]));
        assert!(!prefers_multipart(&HeaderMap::new()));
        assert!(prefers("multipart/mixed"));
        assert!(prefers("multipart/mixed, */*;q=0.5"));
        assert!(!prefers("*/*"));
        assert!(!prefers("text/plain, multipart/mixed;q=0.5"));
        assert!(!prefers("application/json"));
    }
}
