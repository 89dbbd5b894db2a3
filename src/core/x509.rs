//! The one thing we read out of an X.509 certificate ourselves: its subject
//! common name, the "certificate name" the cluster binds to a node id
//! (`rpc::tls`, `rpc::identity`). rustls has already verified the
//! certificate (chain, validity) before anything asks; this only walks its
//! DER far enough to find the name. A full X.509 parser (x509-parser) would
//! pull proc-macro features into the build graph that RocksDB's bindgen
//! shares, and rebuild RocksDB (25 minutes) for a dozen lines of DER.
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate SEQUENCE {
//!     [0] version OPTIONAL, serialNumber INTEGER, signature SEQUENCE,
//!     issuer Name, validity SEQUENCE, subject Name, ... }, ... }
//! Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value DirectoryString }
//! ```

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const INTEGER: u8 = 0x02;
const OID: u8 = 0x06;
const VERSION: u8 = 0xA0;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];
/// UTF8String, PrintableString, IA5String: the text types a CN comes in.
const TEXT_TAGS: [u8; 3] = [0x0C, 0x13, 0x16];

/// One DER element: (tag, contents, what follows). `None` if malformed.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |len, &b| (len << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// The element at the front of `input` if it has tag `tag`: (contents, rest).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (got, contents, rest) = element(input)?;
    (got == tag).then_some((contents, rest))
}

/// The subject common name of a DER certificate; `None` if it has none (or
/// is not a certificate).
pub fn common_name(der: &[u8]) -> Option<String> {
    let (certificate, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(certificate, SEQUENCE)?;
    let mut fields = tbs;
    if let Some((_, rest)) = expect(fields, VERSION) {
        fields = rest;
    }
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE] {
        fields = expect(fields, tag)?.1; // serial, signature, issuer, validity
    }
    let (mut subject, _) = expect(fields, SEQUENCE)?;
    while !subject.is_empty() {
        let (mut rdn, rest) = expect(subject, SET)?;
        subject = rest;
        while !rdn.is_empty() {
            let (attribute, rest) = expect(rdn, SEQUENCE)?;
            rdn = rest;
            let (oid, value) = expect(attribute, OID)?;
            if oid == COMMON_NAME {
                let (tag, text, _) = element(value)?;
                return TEXT_TAGS.contains(&tag).then(|| std::str::from_utf8(text).ok().map(str::to_owned))?;
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if contents.len() < 0x80 {
            out.push(contents.len() as u8);
        } else {
            out.extend([0x82, (contents.len() >> 8) as u8, contents.len() as u8]);
        }
        out.extend_from_slice(contents);
        out
    }

    fn name(attributes: &[(&[u8], u8, &str)]) -> Vec<u8> {
        let rdns: Vec<u8> = attributes
            .iter()
            .flat_map(|(oid, tag, text)| {
                tlv(SET, &tlv(SEQUENCE, &[tlv(OID, oid), tlv(*tag, text.as_bytes())].concat()))
            })
            .collect();
        tlv(SEQUENCE, &rdns)
    }

    /// A certificate's outline: what `common_name` walks (no signature).
    fn certificate(subject: &[u8], version: bool) -> Vec<u8> {
        let issuer = name(&[(&COMMON_NAME, 0x0C, "some CA")]);
        let mut tbs = Vec::new();
        if version {
            tbs.extend(tlv(VERSION, &tlv(INTEGER, &[2])));
        }
        tbs.extend(tlv(INTEGER, &[1; 20]));
        tbs.extend(tlv(SEQUENCE, &tlv(OID, &[1, 2, 3])));
        tbs.extend(issuer);
        tbs.extend(tlv(SEQUENCE, &[0; 30]));
        tbs.extend_from_slice(subject);
        tbs.extend(tlv(SEQUENCE, &[0; 200])); // the public key: a long form length
        tlv(SEQUENCE, &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[])].concat())
    }

    #[test]
    fn finds_the_subject_common_name_not_the_issuers() {
        let organisation: &[u8] = &[0x55, 0x04, 0x0A];
        let subject = name(&[(organisation, 0x13, "Vinz"), (&COMMON_NAME, 0x0C, "node-1")]);
        assert_eq!(common_name(&certificate(&subject, true)).as_deref(), Some("node-1"));
        assert_eq!(common_name(&certificate(&subject, false)).as_deref(), Some("node-1"));
        let printable = name(&[(&COMMON_NAME, 0x13, "n2")]);
        assert_eq!(common_name(&certificate(&printable, true)).as_deref(), Some("n2"));
    }

    #[test]
    fn no_name_or_a_malformed_certificate_is_none() {
        let organisation: &[u8] = &[0x55, 0x04, 0x0A];
        let without = name(&[(organisation, 0x13, "Vinz")]);
        assert_eq!(common_name(&certificate(&without, true)), None);
        let bmp = name(&[(&COMMON_NAME, 0x1E, "x")]);
        assert_eq!(common_name(&certificate(&bmp, true)), None);
        let good = certificate(&name(&[(&COMMON_NAME, 0x0C, "node-1")]), true);
        for cut in 0..good.len() - 1 {
            // Any truncation is malformed somewhere before or inside the name.
            let _ = common_name(&good[..cut]);
        }
        assert_eq!(common_name(&[]), None);
        assert_eq!(common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(common_name(b"not a certificate at all"), None);
    }
}
