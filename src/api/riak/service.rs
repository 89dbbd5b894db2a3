//! Riak's service resources: `GET /` (the resource list clients read to
//! find paths and detect features), `GET /stats` (`riak_kv_wm_stats`),
//! `.../keys/K/preflist` (`riak_kv_wm_preflist`), and clear refusals of
//! what this store does not have (MapReduce, search, data types, link
//! walking).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::path::object_path;
use crate::api::{AppState, error::ApiError};
use crate::error::ErrorCode;
use crate::telemetry::metrics::REQUEST_DURATION_SECONDS;

/// The Riak KV release whose HTTP API this one follows, as `/stats` reports
/// it in `riak_kv_version`: clients switch features on by it (the Python
/// client wants at least 2.1 for preflists, 1.4 for streamed listings).
pub const RIAK_KV_VERSION: &str = "3.0.16";

/// Riak's resource names and their paths, as Riak 2.x/3.x lists them
/// (without search, which is not here).
const RESOURCES: &[(&str, &str)] = &[
    ("riak_kv_wm_bucket_type", "/types"),
    ("riak_kv_wm_buckets", "/buckets"),
    ("riak_kv_wm_counter", "/buckets"),
    ("riak_kv_wm_index", "/buckets"),
    ("riak_kv_wm_keylist", "/buckets"),
    ("riak_kv_wm_link_walker", "/riak"),
    ("riak_kv_wm_mapred", "/mapred"),
    ("riak_kv_wm_object", "/buckets"),
    ("riak_kv_wm_ping", "/ping"),
    ("riak_kv_wm_preflist", "/types"),
    ("riak_kv_wm_props", "/buckets"),
    ("riak_kv_wm_raw", "/riak"),
    ("riak_kv_wm_stats", "/stats"),
];

/// `GET /`: JSON when the client accepts it (Riak's clients ask so), else
/// Riak's HTML list of links.
pub async fn resources(headers: HeaderMap) -> Response {
    let wants_json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    if wants_json {
        let map: BTreeMap<&str, &str> = RESOURCES.iter().copied().collect();
        return Json(map).into_response();
    }
    let items: String =
        RESOURCES.iter().map(|(name, path)| format!("<li><a href=\"{path}\">{name}</a></li>")).collect();
    Html(format!("<html><body><ul>{items}</ul></body></html>")).into_response()
}

/// `GET /stats`: Riak's names for what this node measured. Counts and
/// times come from the same histograms `/metrics` exports
/// (`vinzclortho_request_duration_seconds`, every client API), since the
/// node started (Riak's `node_gets`/`node_puts` cover the last minute; here
/// they equal the totals). Times are in microseconds, as Riak's, estimated
/// from the histogram's buckets as Prometheus' `histogram_quantile` does.
pub async fn stats(State(api): State<AppState>) -> Json<Value> {
    let rendered = api.metrics.render();
    let latency = |op: &str| Latency::from_rendered(&rendered, op);
    let members = api.membership.members();
    let view = api.membership.view();
    let node = api.membership.http_address(api.membership.local());
    let mut out = json!({
        "nodename": node,
        "node_id": api.membership.local().to_string(),
        "riak_kv_version": RIAK_KV_VERSION,
        "vinzclortho_version": env!("CARGO_PKG_VERSION"),
        "ring_members": members.iter().map(|m| m.address.clone()).collect::<Vec<_>>(),
        "connected_nodes": members.iter().filter(|m| m.status == "up" && m.address != node)
            .map(|m| m.address.clone()).collect::<Vec<_>>(),
        "ring_num_partitions": view.current.partitions(),
        "ring_creation_size": view.current.partitions(),
        "n_val": view.n_val,
        "storage_backend": api.store.engine(),
    });
    let fields = out.as_object_mut().expect("an object");
    for (riak, op) in [("get", "get"), ("put", "put")] {
        let l = latency(op);
        fields.insert(format!("node_{riak}s"), json!(l.count));
        fields.insert(format!("node_{riak}s_total"), json!(l.count));
        fields.insert(format!("node_{riak}_fsm_time_mean"), json!(l.mean_us()));
        for (name, q) in [("median", 0.5), ("95", 0.95), ("99", 0.99), ("100", 1.0)] {
            fields.insert(format!("node_{riak}_fsm_time_{name}"), json!(l.quantile_us(q)));
        }
    }
    Json(out)
}

/// One operation's request latency histogram, summed over the APIs.
#[derive(Debug, Default, PartialEq)]
struct Latency {
    count: u64,
    sum_seconds: f64,
    /// (upper bound in seconds, cumulative count), ascending.
    buckets: Vec<(f64, u64)>,
}

impl Latency {
    /// Reads `vinzclortho_request_duration_seconds{op="OP"}` from a
    /// Prometheus text rendering.
    fn from_rendered(rendered: &str, op: &str) -> Latency {
        let mut latency = Latency::default();
        let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
        let wanted = format!("op=\"{op}\"");
        for line in rendered.lines() {
            let Some(rest) = line.strip_prefix(REQUEST_DURATION_SECONDS) else { continue };
            let Some((series, value)) = rest.rsplit_once(' ') else { continue };
            if !series.contains(&wanted) {
                continue;
            }
            let value: f64 = value.parse().unwrap_or(0.0);
            if series.starts_with("_count") {
                latency.count += value as u64;
            } else if series.starts_with("_sum") {
                latency.sum_seconds += value;
            } else if series.starts_with("_bucket")
                && let Some(le) = series.split("le=\"").nth(1).and_then(|l| l.split('"').next())
            {
                let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::INFINITY) };
                buckets.entry(bound.to_bits()).or_insert((bound, 0)).1 += value as u64;
            }
        }
        latency.buckets = buckets.into_values().collect();
        latency.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        latency
    }

    fn mean_us(&self) -> u64 {
        if self.count == 0 { 0 } else { (self.sum_seconds / self.count as f64 * 1e6) as u64 }
    }

    /// The `q` quantile in µs, interpolated within its bucket; a quantile in
    /// the open-ended bucket is the largest finite bound.
    fn quantile_us(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = q * self.count as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for &(bound, cumulative) in &self.buckets {
            if cumulative as f64 >= rank && cumulative > below {
                if bound.is_infinite() {
                    return (lower * 1e6) as u64;
                }
                let within = (rank - below as f64) / (cumulative - below) as f64;
                return ((lower + (bound - lower) * within.clamp(0.0, 1.0)) * 1e6) as u64;
            }
            (lower, below) = (if bound.is_finite() { bound } else { lower }, cumulative);
        }
        (lower * 1e6) as u64
    }
}

#[derive(Serialize)]
pub struct Preflist {
    preflist: Vec<PreflistEntry>,
}

#[derive(Serialize)]
struct PreflistEntry {
    partition: u32,
    node: String,
    primary: bool,
}

/// `GET .../keys/K/preflist`: the key's replicas, primaries first, as Riak's
/// `{"preflist":[{"partition","node","primary"}]}`; `node` is the member's
/// HTTP address (our node names).
pub async fn preflist(State(api): State<AppState>, uri: Uri) -> Result<Json<Preflist>, ApiError> {
    let object_uri = uri.path().strip_suffix("/preflist").unwrap_or_default();
    let path = object_path(object_uri)
        .filter(|p| p.key.is_some())
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no such resource: {}", uri.path())))?;
    let key = path.object_key(path.key.clone().expect("checked"));
    // The bucket's n_val primaries (an unknown bucket type is a 404).
    let n_val = api.coordinator.n_val_of(&key)?;
    let view = api.membership.view();
    let partition = view.current.partition_of(&key);
    let preflist = view
        .current
        .preflist(partition, n_val)
        .into_iter()
        .map(|e| PreflistEntry {
            partition: e.partition,
            node: api.membership.http_address(&e.node),
            primary: e.primary,
        })
        .collect();
    Ok(Json(Preflist { preflist }))
}

/// What Riak has and this store does not: 501 with a line saying so.
pub async fn not_supported(uri: Uri) -> ApiError {
    let path = uri.path();
    let what = if path.starts_with("/mapred") {
        "MapReduce is not supported"
    } else if path.starts_with("/search") || path.starts_with("/solr") {
        "Riak Search is not supported"
    } else if path.contains("/datatypes") {
        "Riak data types are not supported (counters are: /buckets/BUCKET/counters/KEY)"
    } else if path.starts_with("/riak/") {
        "Link walking is not supported"
    } else {
        "This Riak resource is not supported"
    };
    ApiError::new(ErrorCode::NotImplemented, format!("{what}; see the README, Coming from Riak"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = "\
vinzclortho_request_duration_seconds_bucket{api=\"store\",op=\"get\",le=\"0.001\"} 2
vinzclortho_request_duration_seconds_bucket{api=\"store\",op=\"get\",le=\"0.01\"} 4
vinzclortho_request_duration_seconds_bucket{api=\"store\",op=\"get\",le=\"+Inf\"} 4
vinzclortho_request_duration_seconds_sum{api=\"store\",op=\"get\"} 0.02
vinzclortho_request_duration_seconds_count{api=\"store\",op=\"get\"} 4
vinzclortho_request_duration_seconds_bucket{api=\"riak\",op=\"get\",le=\"0.001\"} 0
vinzclortho_request_duration_seconds_bucket{api=\"riak\",op=\"get\",le=\"0.01\"} 0
vinzclortho_request_duration_seconds_bucket{api=\"riak\",op=\"get\",le=\"+Inf\"} 1
vinzclortho_request_duration_seconds_sum{api=\"riak\",op=\"get\"} 3
vinzclortho_request_duration_seconds_count{api=\"riak\",op=\"get\"} 1
vinzclortho_request_duration_seconds_count{api=\"store\",op=\"put\"} 9
";

    #[test]
    fn latency_sums_the_apis_and_interpolates_like_histogram_quantile() {
        let l = Latency::from_rendered(RENDERED, "get");
        assert_eq!(l.count, 5);
        assert_eq!(l.buckets, vec![(0.001, 2), (0.01, 4), (f64::INFINITY, 5)]);
        assert_eq!(l.mean_us(), 604_000);
        // Rank 2.5 of 5 lies a sixth of the way into (0.001, 0.01].
        assert_eq!(l.quantile_us(0.5), 1_000 + 9_000 / 4);
        assert_eq!(l.quantile_us(0.2), 500);
        assert_eq!(l.quantile_us(1.0), 10_000, "the open bucket reports its lower bound");
        assert_eq!(Latency::from_rendered(RENDERED, "put").count, 9);
        assert_eq!(Latency::from_rendered("", "get").quantile_us(0.99), 0);
    }
}
