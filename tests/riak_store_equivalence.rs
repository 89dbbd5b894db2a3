//! The Riak API and `/store` are two views of one object: any sequence of
//! writes, deletes and reads through either, with or without the context
//! the last read of either gave, leaves a state both read the same way:
//! the same status, the same values, and the same causal context (one
//! sealed token, URL-safe in `X-VinzClortho-Context`, standard base64 in
//! `X-Riak-Vclock`). In process (the router over the in-memory engine),
//! so proptest can run hundreds of sequences.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use clap::Parser;
use http_body_util::BodyExt;
use proptest::prelude::*;
use tower::ServiceExt;
use vinzclortho::cli::Cli;
use vinzclortho::node;
use vinzclortho::storage::MemoryStore;

fn app() -> Router {
    let config = Cli::try_parse_from(["vinzclortho", "--storage", "memory"]).unwrap().node.resolve().unwrap();
    node::build(
        &config,
        &node::Host::real(),
        "127.0.0.1:8880".into(),
        "127.0.0.1:9880".into(),
        Arc::new(MemoryStore::new()),
        None,
    )
    .unwrap()
    .router
}

#[derive(Debug, Clone, Copy)]
enum Api {
    Store,
    Riak,
}

#[derive(Debug, Clone)]
enum Op {
    /// A write through `api`, with the context of the last read (through
    /// `context_from`) or none.
    Put {
        api: Api,
        value: u8,
        with_context: bool,
    },
    Delete {
        api: Api,
        with_context: bool,
    },
    Read {
        api: Api,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let api = prop_oneof![Just(Api::Store), Just(Api::Riak)];
    prop_oneof![
        4 => (api.clone(), any::<u8>(), any::<bool>()).prop_map(|(api, value, with_context)| Op::Put { api, value, with_context }),
        1 => (api.clone(), any::<bool>()).prop_map(|(api, with_context)| Op::Delete { api, with_context }),
        2 => api.prop_map(|api| Op::Read { api }),
    ]
}

/// What a read shows: its status, the values, and the context's bytes.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: StatusCode,
    values: BTreeSet<Vec<u8>>,
    context: Option<Vec<u8>>,
}

struct Client {
    rt: tokio::runtime::Runtime,
    app: Router,
}

impl Client {
    fn send(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, http::HeaderMap, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req.body(Body::from(body)).unwrap();
        self.rt.block_on(async {
            let res = self.app.clone().oneshot(req).await.unwrap();
            let (parts, body) = res.into_parts();
            (parts.status, parts.headers, body.collect().await.unwrap().to_bytes().to_vec())
        })
    }

    fn read(&self, api: Api) -> (Seen, Option<String>) {
        let (uri, header, accept) = match api {
            Api::Store => ("/store/k", "x-vinzclortho-context", None),
            Api::Riak => ("/buckets/default/keys/k", "x-riak-vclock", Some("multipart/mixed")),
        };
        let headers: Vec<(&str, String)> = accept.map(|a| ("accept", a.to_owned())).into_iter().collect();
        let (status, h, body) = self.send("GET", uri, &headers, Vec::new());
        let token = h.get(header).map(|v| v.to_str().unwrap().to_owned());
        let context = token.as_ref().map(|t| match api {
            Api::Store => URL_SAFE_NO_PAD.decode(t).unwrap(),
            Api::Riak => STANDARD.decode(t).unwrap(),
        });
        let content_type = h.get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        let values = match status {
            StatusCode::OK => [body].into(),
            StatusCode::MULTIPLE_CHOICES => vinzclortho::bench::target::multipart_values(&content_type, &body)
                .unwrap()
                .into_iter()
                .map(|b| b.to_vec())
                .collect(),
            _ => BTreeSet::new(),
        };
        (Seen { status, values, context }, token)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn both_apis_see_one_object(ops in proptest::collection::vec(op(), 1..14)) {
        let client = Client {
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap(),
            app: app(),
        };
        // The last context read, through whichever API.
        let mut last: Option<String> = None;
        for op in ops {
            let context = |api: Api, with: bool| -> Vec<(&str, String)> {
                let name = match api { Api::Store => "x-vinzclortho-context", Api::Riak => "x-riak-vclock" };
                if with { last.clone().map(|t| (name, t)).into_iter().collect() } else { Vec::new() }
            };
            match op {
                Op::Put { api, value, with_context } => {
                    let mut headers = context(api, with_context);
                    headers.push(("content-type", "text/plain".to_owned()));
                    let uri = match api { Api::Store => "/store/k", Api::Riak => "/buckets/default/keys/k" };
                    let (status, _, _) = client.send("PUT", uri, &headers, vec![value]);
                    prop_assert!(status.is_success(), "{:?}: {}", op, status);
                }
                Op::Delete { api, with_context } => {
                    let headers = context(api, with_context);
                    let uri = match api { Api::Store => "/store/k", Api::Riak => "/buckets/default/keys/k" };
                    let (status, _, _) = client.send("DELETE", uri, &headers, Vec::new());
                    // Riak answers 404 when there was nothing to delete.
                    prop_assert!(status.is_success() || status == StatusCode::NOT_FOUND, "{:?}: {}", op, status);
                }
                Op::Read { api } => {
                    last = client.read(api).1;
                }
            }
            let (store, _) = client.read(Api::Store);
            let (riak, _) = client.read(Api::Riak);
            prop_assert_eq!(&store, &riak);
        }
    }
}
