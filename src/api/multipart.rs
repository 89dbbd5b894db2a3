//! `multipart/mixed` bodies for 300 Multiple Choices (RFC 2046): one part
//! per sibling, each with its own Content-Type and Last-Modified.

use rand::distr::{Alphanumeric, SampleString};

use crate::core::object::Sibling;
use crate::env::Entropy;

/// Returns the Content-Type (with boundary) and the body.
pub fn multipart_mixed(siblings: &[Sibling], entropy: &Entropy) -> (String, Vec<u8>) {
    let boundary = boundary_for(siblings, entropy);
    let mut body = Vec::with_capacity(siblings.iter().map(|s| s.content.value.len() + 160).sum());
    for s in siblings {
        body.extend_from_slice(format!("\r\n--{boundary}\r\n").as_bytes());
        body.extend_from_slice(format!("Content-Type: {}\r\n", s.content.content_type).as_bytes());
        body.extend_from_slice(format!("Last-Modified: {}\r\n\r\n", http_date(s.content.last_modified_ms)).as_bytes());
        body.extend_from_slice(&s.content.value);
    }
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/mixed; boundary={boundary}"), body)
}

/// A random boundary that occurs in no value (so no part can end early).
fn boundary_for(siblings: &[Sibling], entropy: &Entropy) -> String {
    loop {
        let candidate = entropy.with(|rng| Alphanumeric.sample_string(rng, 28));
        let needle = candidate.as_bytes();
        if !siblings.iter().any(|s| s.content.value.windows(needle.len()).any(|w| w == needle)) {
            return candidate;
        }
    }
}

/// A Last-Modified value: each part's here, and a single value's answer
/// (`store`) too.
pub(super) fn http_date(ms: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}
