//! Riak's query parameters, checked as `riak_kv_wm_object:malformed_request`
//! does: the quorum values take an integer or `one`, `quorum`, `all`,
//! `default`; the booleans `true`, `false` or `default` (any case);
//! `timeout` an integer of milliseconds. Anything else is a 400 with Riak's
//! text. Parameters Riak does not know are ignored, as Riak does.

use std::time::Duration;

use serde::Deserialize;

use crate::api::ApiError;
use crate::coordinator::{QuorumParam, ReadOptions, WriteOptions};

#[derive(Debug, Default, Deserialize)]
pub struct RawParams {
    r: Option<String>,
    w: Option<String>,
    dw: Option<String>,
    rw: Option<String>,
    pr: Option<String>,
    pw: Option<String>,
    node_confirms: Option<String>,
    notfound_ok: Option<String>,
    basic_quorum: Option<String>,
    asis: Option<String>,
    returnbody: Option<String>,
    /// Counters' `returnbody`.
    returnvalue: Option<String>,
    timeout: Option<String>,
    vtag: Option<String>,
}

/// A request's parameters, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub r: QuorumParam,
    pub w: QuorumParam,
    pub dw: QuorumParam,
    pub rw: QuorumParam,
    pub pr: QuorumParam,
    pub pw: QuorumParam,
    pub node_confirms: QuorumParam,
    /// `None`: the bucket's setting.
    pub notfound_ok: Option<bool>,
    pub basic_quorum: Option<bool>,
    pub returnbody: bool,
    pub returnvalue: bool,
    pub timeout: Option<Duration>,
    pub vtag: Option<String>,
}

impl RawParams {
    pub fn parse(&self) -> Result<Params, ApiError> {
        let quorum = |name: &str, value: &Option<String>| match value.as_deref() {
            None => Ok(QuorumParam::Default),
            Some(v) => v.parse::<QuorumParam>().map_err(|_| {
                ApiError::bad_request(format!(
                    "{name} query parameter must be an integer or one of the following words: 'one', 'quorum' or 'all'"
                ))
            }),
        };
        let boolean = |name: &str, value: &Option<String>| match value.as_deref().map(str::to_ascii_lowercase) {
            None => Ok(None),
            Some(v) if v == "default" => Ok(None),
            Some(v) if v == "true" => Ok(Some(true)),
            Some(v) if v == "false" => Ok(Some(false)),
            Some(_) => Err(ApiError::bad_request(format!("{name} query parameter must be true or false"))),
        };
        let timeout = match self.timeout.as_deref() {
            None => None,
            Some(t) => Some(
                t.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| ApiError::bad_request(format!("Bad timeout value {t:?}")))?,
            ),
        };
        // `asis` (a put that keeps the client's vclock as it is) is an
        // internal replication switch in Riak; it is checked, not honoured.
        boolean("asis", &self.asis)?;
        Ok(Params {
            r: quorum("r", &self.r)?,
            w: quorum("w", &self.w)?,
            dw: quorum("dw", &self.dw)?,
            rw: quorum("rw", &self.rw)?,
            pr: quorum("pr", &self.pr)?,
            pw: quorum("pw", &self.pw)?,
            node_confirms: quorum("node_confirms", &self.node_confirms)?,
            notfound_ok: boolean("notfound_ok", &self.notfound_ok)?,
            basic_quorum: boolean("basic_quorum", &self.basic_quorum)?,
            returnbody: self.returnbody.as_deref() == Some("true"),
            returnvalue: self.returnvalue.as_deref() == Some("true"),
            timeout,
            vtag: self.vtag.clone(),
        })
    }
}

impl Params {
    pub fn read(&self) -> ReadOptions {
        ReadOptions { r: self.r, pr: self.pr, notfound_ok: self.notfound_ok, basic_quorum: self.basic_quorum }
    }

    /// A write waits for W acknowledgements. Every acknowledgement here is
    /// durable (in the replica's write-ahead log), so Riak's `dw` is a W of
    /// its own, and `node_confirms` too (our replicas of a key are always
    /// distinct nodes): the write waits for the largest of them.
    pub fn write(&self) -> WriteOptions {
        WriteOptions { w: largest([self.w, self.dw, self.node_confirms]), pw: self.pw }
    }

    /// A delete: Riak's `rw` (a quorum for both the read and the write of a
    /// delete) raises R and W alike.
    pub fn delete(&self) -> (ReadOptions, WriteOptions) {
        let mut write = self.write();
        write.w = largest([write.w, self.rw]);
        (ReadOptions { r: largest([self.r, self.rw]), ..self.read() }, write)
    }
}

/// The most demanding of several quorum values; `Default` when none is set.
/// Named values are compared after numbers only through `resolve`, so keep
/// the first set one unless two numbers compare.
fn largest<const K: usize>(values: [QuorumParam; K]) -> QuorumParam {
    let rank = |q: &QuorumParam| match q {
        QuorumParam::Default => 0,
        QuorumParam::One | QuorumParam::Count(1) => 1,
        QuorumParam::Quorum => 2,
        QuorumParam::Count(n) => 1 + *n as u64,
        QuorumParam::All => u64::MAX,
    };
    values.into_iter().max_by_key(rank).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawParams {
        let query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
        let uri: axum::http::Uri = format!("/?{query}").parse().unwrap();
        axum::extract::Query::<RawParams>::try_from_uri(&uri).unwrap().0
    }

    #[test]
    fn riak_values_parse_and_bad_ones_say_which() {
        let p = raw(&[("r", "one"), ("w", "3"), ("pr", "default"), ("notfound_ok", "FALSE"), ("returnbody", "true")])
            .parse()
            .unwrap();
        assert_eq!((p.r, p.w, p.pr), (QuorumParam::One, QuorumParam::Count(3), QuorumParam::Default));
        assert_eq!((p.notfound_ok, p.returnbody), (Some(false), true));
        assert_eq!(raw(&[("timeout", "250")]).parse().unwrap().timeout, Some(Duration::from_millis(250)));
        for (name, value, needle) in [
            ("r", "two", "r query parameter must be an integer"),
            ("dw", "-1", "dw query parameter"),
            ("node_confirms", "x", "node_confirms query parameter"),
            ("basic_quorum", "yes", "basic_quorum query parameter must be true or false"),
            ("timeout", "soon", "Bad timeout value"),
        ] {
            let e = raw(&[(name, value)]).parse().unwrap_err();
            assert!(e.message().contains(needle), "{name}={value}: {e:?}");
        }
        // Only "true" turns returnbody on, as in Riak.
        assert!(!raw(&[("returnbody", "1")]).parse().unwrap().returnbody);
    }

    #[test]
    fn dw_node_confirms_and_rw_raise_the_write_quorum() {
        let p = raw(&[("w", "1"), ("dw", "2")]).parse().unwrap();
        assert_eq!(p.write().w, QuorumParam::Count(2));
        let p = raw(&[("w", "quorum"), ("node_confirms", "all")]).parse().unwrap();
        assert_eq!(p.write().w, QuorumParam::All);
        let p = raw(&[("rw", "3")]).parse().unwrap();
        let (read, write) = p.delete();
        assert_eq!((read.r, write.w), (QuorumParam::Count(3), QuorumParam::Count(3)));
        assert_eq!(Params::default().write().w, QuorumParam::Default);
    }
}
