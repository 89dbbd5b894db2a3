//! `GET /admin/replicas/{key}`: every copy of a key on its preference list,
//! primaries and fallbacks, each node asked for its own (through the
//! coordinator's replica client: no quorum, no read repair), so operators
//! can see divergence. `?type=T&bucket=B` names a key outside the default
//! bucket.
//!
//! ```json
//! {"partition": 5, "replicas": [{"node": "127.0.0.1:8880", "primary": true, "answered": true,
//!   "siblings": [{"sha1": "HEX of the value", "deleted": false}], "context": "..."}]}
//! ```
//!
//! A replica that did not answer (down, timed out, refused) has
//! `"answered": false` and neither siblings nor context. A tombstone is one
//! sibling with `"deleted": true` (the SHA-1 of an empty value); a node
//! without the key answers no siblings and an empty context.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::Uri;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use super::AppState;
use super::error::ApiError;
use super::store::store_key_from;
use crate::core::key::ObjectKey;
use crate::core::object::Object;

#[derive(Debug, Default, Deserialize)]
pub struct Params {
    #[serde(rename = "type")]
    pub bucket_type: Option<String>,
    pub bucket: Option<String>,
}

#[derive(Serialize)]
pub struct Replicas {
    partition: u32,
    replicas: Vec<Replica>,
}

#[derive(Serialize)]
pub struct Replica {
    /// The node's HTTP address.
    node: String,
    primary: bool,
    answered: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    siblings: Option<Vec<SiblingDigest>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<String>,
}

#[derive(Serialize)]
pub struct SiblingDigest {
    sha1: String,
    deleted: bool,
}

fn hex_sha1(bytes: &[u8]) -> String {
    Sha1::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn digests(object: &Object) -> Vec<SiblingDigest> {
    if object.is_tombstone() {
        return vec![SiblingDigest { sha1: hex_sha1(b""), deleted: true }];
    }
    object.siblings().iter().map(|s| SiblingDigest { sha1: hex_sha1(&s.content.value), deleted: false }).collect()
}

pub async fn replicas(
    State(api): State<AppState>,
    uri: Uri,
    Query(params): Query<Params>,
) -> Result<Json<Replicas>, ApiError> {
    let in_default = store_key_from(&uri, "/admin/replicas/", api.limits.max_key_bytes)?;
    let key = ObjectKey::new(
        params.bucket_type.unwrap_or_else(|| "default".to_owned()),
        params.bucket.unwrap_or_else(|| "default".to_owned()),
        in_default.key,
    );
    let report = api.coordinator.replicas(&key).await;
    let replicas = report
        .replicas
        .into_iter()
        .map(|copy| {
            let node = api.membership.http_address(&copy.node);
            match copy.answer {
                Ok(object) => Replica {
                    node,
                    primary: copy.primary,
                    answered: true,
                    context: Some(if object.is_empty() {
                        String::new()
                    } else {
                        api.contexts.seal(&key, object.clock())
                    }),
                    siblings: Some(digests(&object)),
                },
                Err(reason) => {
                    tracing::debug!(%node, %reason, "replica did not answer /admin/replicas");
                    Replica { node, primary: copy.primary, answered: false, siblings: None, context: None }
                }
            }
        })
        .collect();
    Ok(Json(Replicas { partition: report.partition, replicas }))
}
