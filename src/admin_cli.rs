//! `vinzclortho admin`: the operator's command line, in the manner of
//! riak-admin, etcdctl and nodetool. It talks to any one node over its HTTP
//! API (`/admin/...`), so it needs nothing a node does not already serve.
//!
//! Conventions every command keeps (scripts rely on them):
//! * human tables by default, the node's JSON answer with `--json`;
//! * exit 0 on success, 1 when the cluster answered with a failure (or is
//!   not healthy, for `wait-healthy`), 2 on bad usage (clap's own exit code
//!   for a bad command line; also a node that rejects the request as
//!   malformed, 400).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args, Subcommand};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http_client::{ClientTls, Connector};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The node to ask: its HTTP address (any member will do); `https://HOST:PORT` for a node
    /// with an HTTP certificate.
    #[arg(long, default_value = "127.0.0.1:8880", env = "VINZCLORTHO_ADMIN_NODE", global = true)]
    pub node: String,
    /// The CA that signed the nodes' HTTP certificates (PEM): speak HTTPS to
    /// every node, checking its certificate against this CA [default: plain
    /// HTTP, unless --node says https://]
    #[arg(long, value_name = "FILE", env = "VINZCLORTHO_CACERT", global = true)]
    pub cacert: Option<PathBuf>,
    /// Print the node's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// How long one request to the node may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, global = true)]
    pub request_timeout: u64,
    /// The bearer token sent with every request (a cluster with --security
    /// needs one with the admin grant; the first is in DATA_DIR/admin.token).
    #[arg(long, env = "VINZCLORTHO_TOKEN", hide_env_values = true, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The node's status: identity, ring, storage, transfers.
    Status,
    /// Every member as the node sees it: address, up or down, claim.
    Members,
    /// Ownership per node (partitions now and after a move in progress,
    /// share of the ring) and the partitions that are moving.
    Ring,
    /// Every member's outgoing partition transfers for the move in
    /// progress, with their rates (objects/s over `--sample-ms`).
    Transfers {
        /// How long to watch the running transfers to measure their rates.
        #[arg(long, default_value_t = 1000)]
        sample_ms: u64,
    },
    /// The partitions this node asks for.
    Claim {
        #[command(subcommand)]
        command: ClaimCommand,
    },
    /// A key's partition and its preference list.
    Preflist { key: String },
    /// Every copy of a key, asked from each node of its preference list
    /// (primaries, then fallbacks) without repairing anything: divergence
    /// shows as different siblings or contexts.
    Replicas {
        key: String,
        /// The key's bucket type (default: `default`).
        #[arg(long = "type", value_name = "TYPE")]
        bucket_type: Option<String>,
        /// The key's bucket (default: `default`).
        #[arg(long)]
        bucket: Option<String>,
    },
    /// Stage the leave of the node asked (`--node`): once committed it hands
    /// every partition to the others, then owns nothing and can be stopped.
    Leave,
    /// Stage the removal of a dead member that will not come back (ask any
    /// other node); its partitions are refilled from the surviving copies.
    ForceRemove {
        /// The dead member's id (`admin members` shows it).
        node_id: String,
    },
    /// Stage the replacement of member OLD by NEW, a member already (joined
    /// with claim 0): NEW takes over exactly OLD's partitions.
    Replace { old: String, new: String },
    /// The staged changes and what committing them would move; `plan clear`
    /// drops them.
    Plan {
        #[command(subcommand)]
        command: Option<PlanCommand>,
    },
    /// Apply every staged change as one ring change (the claimant does);
    /// exit 0 once applied, 1 if it was not within the node's wait (the
    /// commit stays requested).
    Commit,
    /// Client tokens (a cluster with --security): create, list, revoke,
    /// grant.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Bucket types, as riak-admin's: create, activate, list, status,
    /// update. A created type is usable once activated.
    BucketType {
        #[command(subcommand)]
        command: BucketTypeCommand,
    },
    /// Write a consistent snapshot of the node's data (a RocksDB
    /// checkpoint, taken while it keeps serving) into DIR, a new directory
    /// ON THE NODE'S MACHINE. DIR is a data directory: to restore, stop the
    /// node, put DIR in place of its --data-dir, start it (README, "Backup
    /// and restore").
    Backup {
        /// Absolute path of a directory that does not exist yet, on the
        /// node's machine; on the data directory's filesystem the snapshot
        /// hard-links the data files and is quick (copy it elsewhere
        /// afterwards).
        dir: PathBuf,
        /// Seconds to wait for the node's answer (a snapshot onto another
        /// filesystem copies every file).
        #[arg(long, value_name = "SECONDS", default_value_t = 600)]
        timeout: u64,
    },
    /// Exit 0 once every member is up, nothing is moving or
    /// under-replicated and no hinted write waits, as every member sees
    /// itself; 1 at the timeout.
    WaitHealthy {
        /// Seconds to wait.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
}

#[derive(Debug, Subcommand)]
pub enum ClaimCommand {
    /// The number of partitions the node owns.
    Get,
    /// Ask for this many partitions (a weight; partitions move after their data).
    Set { partitions: u64 },
}

#[derive(Debug, Subcommand)]
pub enum BucketTypeCommand {
    /// Create a bucket type (not active: activate it to use it). PROPS is
    /// Riak's JSON, e.g. '{"props":{"n_val":1,"allow_mult":false}}';
    /// n_val is at most the cluster's. Creating an inactive type again
    /// replaces its properties.
    Create {
        name: String,
        #[arg(default_value = "{\"props\":{}}")]
        props: String,
    },
    /// Make a created type usable, on every node within a few gossip
    /// rounds; for good.
    Activate { name: String },
    /// Every bucket type, active or not.
    List,
    /// A type's state and properties.
    Status { name: String },
    /// Change some of a type's properties ('{"props":{...}}'); n_val cannot
    /// change once the type is active.
    Update { name: String, props: String },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it: it is shown this once (the cluster
    /// keeps only its hash).
    Create {
        /// Letters, digits, '-', '_' and '.'; a revoked name is never reused.
        name: String,
        /// PERMS:SCOPE, e.g. `read,write:default/photos`; permissions are
        /// read, write, delete, list and admin (admin on `*` only); a scope
        /// is `*`, a bucket type, or TYPE/BUCKET. Repeat for more grants.
        #[arg(long = "grant", value_name = "PERMS:SCOPE", required = true)]
        grants: Vec<String>,
        /// The token expires this many seconds from now [default: never]
        #[arg(long, value_name = "SECS")]
        expires_in: Option<u64>,
    },
    /// Every token: grants, expiry, revoked (never the tokens themselves).
    List,
    /// Revoke a token for good, on every node within a few gossip rounds.
    Revoke { name: String },
    /// Replace a token's grants.
    Grant {
        name: String,
        /// PERMS:SCOPE, as for `token create`. Repeat for more grants.
        #[arg(long = "grant", value_name = "PERMS:SCOPE", required = true)]
        grants: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PlanCommand {
    /// Drop every staged change.
    Clear,
}

/// Why a command failed, and so its exit code.
#[derive(Debug)]
enum Failure {
    /// The node said no, or could not be reached: exit 1.
    Cluster(String),
    /// The request was malformed: exit 2.
    Usage(String),
}

pub async fn main(args: AdminArgs) -> ExitCode {
    let tls = match ClientTls::from_flags(args.cacert.as_deref(), [args.node.as_str()]) {
        Ok(tls) => tls,
        Err(message) => {
            eprintln!("vinzclortho admin: --cacert: {message}");
            return ExitCode::from(2);
        }
    };
    let client =
        Node::new(&args.node, &tls, Duration::from_secs(args.request_timeout.max(1))).with_token(args.token.clone());
    match run(&client, &args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Cluster(message)) => {
            eprintln!("vinzclortho admin: {message}");
            ExitCode::from(1)
        }
        Err(Failure::Usage(message)) => {
            eprintln!("vinzclortho admin: {message}");
            ExitCode::from(2)
        }
    }
}

async fn run(node: &Node, args: &AdminArgs) -> Result<(), Failure> {
    let json = args.json;
    match &args.command {
        AdminCommand::Status => {
            let status = node.json(Method::GET, "/admin/status", None).await?;
            print(json, &status, status_table);
        }
        AdminCommand::Members => {
            let status = node.json(Method::GET, "/admin/status", None).await?;
            let members = status.get("members").cloned().unwrap_or(Value::Null);
            print(json, &members, members_table);
        }
        AdminCommand::Ring => {
            let ring = node.json(Method::GET, "/admin/ring", None).await?;
            print(json, &ring, ring_table);
        }
        AdminCommand::Transfers { sample_ms } => {
            let transfers = transfers(node, Duration::from_millis(*sample_ms)).await?;
            print(json, &transfers, transfers_table);
        }
        AdminCommand::Claim { command: ClaimCommand::Get } => {
            let claim = node.text(Method::GET, "/admin/claim", None).await?;
            print_claim(json, &claim);
        }
        AdminCommand::Claim { command: ClaimCommand::Set { partitions } } => {
            let claim = node.text(Method::PUT, "/admin/claim", Some(partitions.to_string())).await?;
            print_claim(json, &claim);
        }
        AdminCommand::Preflist { key } => {
            let path = format!("/admin/preflist/{}", encode_key(key));
            let preflist = node.json(Method::GET, &path, None).await?;
            print(json, &preflist, preflist_table);
        }
        AdminCommand::Replicas { key, bucket_type, bucket } => {
            let mut path = format!("/admin/replicas/{}", encode_key(key));
            let query: Vec<String> = [("type", bucket_type), ("bucket", bucket)]
                .into_iter()
                .filter_map(|(name, v)| v.as_ref().map(|v| format!("{name}={}", encode_key(v).replace('/', "%2F"))))
                .collect();
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let replicas = node.json(Method::GET, &path, None).await?;
            print(json, &replicas, replicas_table);
        }
        AdminCommand::Leave => {
            let plan = node.json(Method::POST, "/admin/leave", None).await?;
            print(json, &plan, plan_table);
        }
        AdminCommand::ForceRemove { node_id } => {
            let plan = node.json(Method::POST, "/admin/force-remove", Some(node_id.clone())).await?;
            print(json, &plan, plan_table);
        }
        AdminCommand::Replace { old, new } => {
            let body = serde_json::json!({"old": old, "new": new}).to_string();
            let plan = node.json(Method::POST, "/admin/replace", Some(body)).await?;
            print(json, &plan, plan_table);
        }
        AdminCommand::Plan { command: None } => {
            let plan = node.json(Method::GET, "/admin/plan", None).await?;
            print(json, &plan, plan_table);
        }
        AdminCommand::Plan { command: Some(PlanCommand::Clear) } => {
            let plan = node.json(Method::DELETE, "/admin/plan", None).await?;
            print(json, &plan, plan_table);
        }
        AdminCommand::Commit => {
            let (status, plan) = node.json_with_status(Method::POST, "/admin/commit", None).await?;
            print(json, &plan, plan_table);
            if status == StatusCode::ACCEPTED {
                return Err(Failure::Cluster(
                    "commit requested, not applied yet: the claimant applies it once it sees a majority \
                     of the members up (`admin plan` shows when the staged changes are gone)"
                        .into(),
                ));
            }
        }
        AdminCommand::Backup { dir, timeout } => {
            // Relative to what? The client's directory means nothing on the node.
            if !dir.is_absolute() {
                return Err(Failure::Usage(format!(
                    "backup directory {} is not absolute: give the full path of a new directory on the node's machine",
                    dir.display()
                )));
            }
            let path = dir.to_str().ok_or_else(|| Failure::Usage(format!("{} is not UTF-8", dir.display())))?;
            let body = serde_json::json!({ "path": path }).to_string();
            let node = node.peer(&args.node).with_timeout(Duration::from_secs((*timeout).max(1)));
            let backup = node.json(Method::POST, "/admin/backup", Some(body)).await?;
            print(json, &backup, backup_table);
        }
        AdminCommand::Token { command } => token(node, json, command).await?,
        AdminCommand::BucketType { command } => bucket_type(node, json, command).await?,
        AdminCommand::WaitHealthy { timeout } => {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(*timeout);
            loop {
                let why = match node.json(Method::GET, "/admin/status", None).await {
                    Ok(status) => match unhealthy(&status).or(members_unhealthy(node, &status).await) {
                        None => {
                            if json {
                                println!("{}", serde_json::json!({"healthy": true}));
                            } else {
                                println!("healthy");
                            }
                            return Ok(());
                        }
                        Some(why) => why,
                    },
                    Err(Failure::Cluster(why) | Failure::Usage(why)) => why,
                };
                if tokio::time::Instant::now() >= deadline {
                    return Err(Failure::Cluster(format!("not healthy after {timeout} s: {why}")));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    Ok(())
}

/// What the other members say of themselves, once the asked node looks
/// healthy: each holds its own hints (and knows its own state), so each
/// is asked; one that does not answer is not healthy either.
async fn members_unhealthy(node: &Node, status: &Value) -> Option<String> {
    let others = status["members"]
        .as_array()?
        .iter()
        .filter_map(|m| m["address"].as_str())
        .filter(|a| node.peer(a).base != node.base)
        .map(str::to_owned)
        .collect::<Vec<_>>();
    for address in others {
        let peer = node.peer(&address);
        match peer.json(Method::GET, "/admin/status", None).await {
            Ok(theirs) => {
                if let Some(why) = unhealthy(&theirs) {
                    return Some(format!("{address}: {why}"));
                }
            }
            Err(Failure::Cluster(why) | Failure::Usage(why)) => return Some(format!("{address}: {why}")),
        }
    }
    None
}

/// `admin token ...`: grants are checked here first (`PERMS:SCOPE`), so a
/// typo is a usage error (exit 2) before anything is sent.
async fn token(node: &Node, json: bool, command: &TokenCommand) -> Result<(), Failure> {
    let grants = |texts: &[String]| -> Result<Value, Failure> {
        let mut out = Vec::new();
        for text in texts {
            let grant = crate::core::security::Grant::parse_short(text).map_err(Failure::Usage)?;
            let permissions: Vec<&str> = grant.permissions.iter().map(|p| p.name()).collect();
            out.push(serde_json::json!({"permissions": permissions, "scope": grant.scope.to_string()}));
        }
        Ok(Value::Array(out))
    };
    let name_path = |name: &str| format!("/admin/tokens/{}", encode_key(name).replace('/', "%2F"));
    match command {
        TokenCommand::Create { name, grants: texts, expires_in } => {
            let mut body = serde_json::json!({"name": name, "grants": grants(texts)?});
            if let Some(s) = expires_in {
                body["expires_in_s"] = Value::from(*s);
            }
            let created = node.json(Method::POST, "/admin/tokens", Some(body.to_string())).await?;
            if json {
                print(json, &created, tokens_table);
            } else {
                println!("{}", text(&created["token"]));
                eprintln!("token {:?} created; it is shown only this once: store it now", text(&created["name"]));
            }
        }
        TokenCommand::List => {
            let tokens = node.json(Method::GET, "/admin/tokens", None).await?;
            print(json, &tokens, tokens_table);
        }
        TokenCommand::Revoke { name } => {
            let token = node.json(Method::DELETE, &name_path(name), None).await?;
            print(json, &Value::Array(vec![token]), tokens_table);
        }
        TokenCommand::Grant { name, grants: texts } => {
            let body = serde_json::json!({"grants": grants(texts)?});
            let token = node.json(Method::PUT, &format!("{}/grants", name_path(name)), Some(body.to_string())).await?;
            print(json, &Value::Array(vec![token]), tokens_table);
        }
    }
    Ok(())
}

/// `admin bucket-type ...`: properties are checked here first, so a typo
/// is a usage error (exit 2) before anything is sent.
async fn bucket_type(node: &Node, json: bool, command: &BucketTypeCommand) -> Result<(), Failure> {
    let props = |text: &str| -> Result<Value, Failure> {
        crate::core::bucket::PropsPatch::from_body(text.as_bytes())
            .map_err(|e| Failure::Usage(format!("bad properties {text:?}: {e}; expected '{{\"props\":{{...}}}}'")))?;
        let value: Value = serde_json::from_str(text).map_err(|e| Failure::Usage(e.to_string()))?;
        Ok(value["props"].clone())
    };
    let path = |name: &str| format!("/admin/bucket-types/{}", encode_key(name).replace('/', "%2F"));
    let show = |t: &Value, human: String| {
        if json {
            println!("{}", serde_json::to_string_pretty(t).expect("a JSON value serialises"));
        } else {
            println!("{human}");
        }
    };
    match command {
        BucketTypeCommand::Create { name, props: text } => {
            let body = serde_json::json!({"name": name, "props": props(text)?});
            let created = node.json(Method::POST, "/admin/bucket-types", Some(body.to_string())).await?;
            show(&created, format!("{name} created"));
        }
        BucketTypeCommand::Activate { name } => {
            let t = node.json(Method::POST, &format!("{}/activate", path(name)), None).await?;
            show(&t, format!("{name} has been activated"));
        }
        BucketTypeCommand::List => {
            let types = node.json(Method::GET, "/admin/bucket-types", None).await?;
            let lines: Vec<String> = types
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    format!("{} ({})", text(&t["name"]), if t["active"] == true { "active" } else { "not active" })
                })
                .collect();
            show(&types, lines.join("\n"));
        }
        BucketTypeCommand::Status { name } => {
            let t = node.json(Method::GET, &path(name), None).await?;
            let state = if t["active"] == true { "active" } else { "not active" };
            let props: Vec<String> = t["props"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}: {}", v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect();
            show(&t, format!("{name} is {state}\n\n{}", props.join("\n")));
        }
        BucketTypeCommand::Update { name, props: text } => {
            let body = serde_json::json!({"props": props(text)?});
            let t = node.json(Method::PUT, &path(name), Some(body.to_string())).await?;
            show(&t, format!("{name} updated"));
        }
    }
    Ok(())
}

fn tokens_table(tokens: &Value) -> String {
    let rows = tokens
        .as_array()
        .map(|ts| {
            ts.iter()
                .map(|t| {
                    let grants: Vec<String> = t["grants"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|g| format!("{}:{}", list(&g["permissions"]).replace(", ", ","), text(&g["scope"])))
                        .collect();
                    let state = if t["revoked"] == true {
                        "revoked"
                    } else if t["expired"] == true {
                        "expired"
                    } else {
                        "active"
                    };
                    vec![text(&t["name"]), state.to_owned(), text(&t["expires_at_ms"]), grants.join(" ")]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["NAME", "STATE", "EXPIRES (MS)", "GRANTS"], rows)
}

/// Every member's transfers, from each member's own `/admin/status`: a node
/// reports only the transfers it sends. While a move is under way every
/// member is sampled twice, `sample` apart, for each sender's pace and time
/// left ([`estimate`]). A member that does not answer is listed with its
/// error.
async fn transfers(node: &Node, sample: Duration) -> Result<Value, Failure> {
    let status = node.json(Method::GET, "/admin/status", None).await?;
    let members: Vec<String> = status["members"]
        .as_array()
        .map(|ms| ms.iter().filter_map(|m| m["address"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let peers: Vec<Node> = members.iter().map(|m| node.peer(m)).collect();
    let snapshot = || async {
        let mut all = Vec::new();
        for peer in &peers {
            all.push(peer.json(Method::GET, "/admin/status", None).await);
        }
        all
    };
    let first = snapshot().await;
    let running = first.iter().flatten().any(|s| {
        s["ring"]["my_pending_transfers"].as_u64().is_some_and(|p| p > 0)
            || s["transfers"].as_array().is_some_and(|ts| ts.iter().any(|t| t["state"] == "running"))
    });
    let started = tokio::time::Instant::now();
    let second = if running {
        tokio::time::sleep(sample).await;
        Some(snapshot().await)
    } else {
        None
    };
    let elapsed = started.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for (i, member) in members.iter().enumerate() {
        let later = second.as_ref().map(|s| &s[i]);
        match (later.unwrap_or(&first[i]), &first[i]) {
            (Ok(now), Ok(before)) => {
                let transfers = now["transfers"].clone();
                let mut entry = serde_json::json!({"node": member, "transfers": transfers});
                estimate(&mut entry, before, now, second.is_some().then_some(elapsed));
                out.push(entry);
            }
            (Err(Failure::Cluster(e) | Failure::Usage(e)), _) | (_, Err(Failure::Cluster(e) | Failure::Usage(e))) => {
                out.push(serde_json::json!({"node": member, "error": e}));
            }
        }
    }
    Ok(Value::Array(out))
}

/// A sender's pace and time left, from two snapshots of its status taken
/// `elapsed` seconds apart (`None`: one snapshot, nothing was running):
/// partitions and objects it finished in between, its transfers still to
/// send (`pending`), and `eta_seconds` at that pace (null until a
/// partition finished within the sample).
fn estimate(entry: &mut Value, before: &Value, now: &Value, elapsed: Option<f64>) {
    let done = |s: &Value| -> (u64, u64) {
        s["transfers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["state"] == "done")
            .fold((0, 0), |(p, o), t| (p + 1, o + t["objects_sent"].as_u64().unwrap_or(0)))
    };
    let pending = now["ring"]["my_pending_transfers"].as_u64().unwrap_or(0);
    entry["pending"] = serde_json::json!(pending);
    let Some(elapsed) = elapsed else {
        entry["eta_seconds"] = if pending == 0 { serde_json::json!(0) } else { Value::Null };
        return;
    };
    let ((p0, o0), (p1, o1)) = (done(before), done(now));
    let partitions_per_second = p1.saturating_sub(p0) as f64 / elapsed.max(0.001);
    let objects_per_second = o1.saturating_sub(o0) as f64 / elapsed.max(0.001);
    entry["partitions_per_second"] = serde_json::json!((partitions_per_second * 100.0).round() / 100.0);
    entry["objects_per_second"] = serde_json::json!(objects_per_second.round());
    entry["eta_seconds"] = match (pending, partitions_per_second > 0.0) {
        (0, _) => serde_json::json!(0),
        (_, true) => serde_json::json!((pending as f64 / partitions_per_second).ceil()),
        (_, false) => Value::Null,
    };
}

fn transfers_table(members: &Value) -> String {
    let mut rows = Vec::new();
    let mut errors = String::new();
    let mut paces = String::new();
    for m in members.as_array().into_iter().flatten() {
        if let Some(e) = m["error"].as_str() {
            errors.push_str(&format!("{}: no answer: {e}\n", text(&m["node"])));
        }
        for t in m["transfers"].as_array().into_iter().flatten() {
            rows.push(vec![
                text(&m["node"]),
                text(&t["partition"]),
                list(&t["to"]),
                text(&t["state"]),
                text(&t["objects_sent"]),
                text(&t["error"]),
            ]);
        }
        let pending = m["pending"].as_u64().unwrap_or(0);
        if pending > 0 || m["partitions_per_second"].as_f64().is_some_and(|r| r > 0.0) {
            let eta = m["eta_seconds"]
                .as_f64()
                .map_or("unknown (no partition finished in the sample)".into(), |s| format!("about {s:.0} s"));
            paces.push_str(&format!(
                "{}: {pending} partitions to send, {} partitions/s, {} objects/s, time left {eta}\n",
                text(&m["node"]),
                m["partitions_per_second"].as_f64().unwrap_or(0.0),
                m["objects_per_second"].as_f64().unwrap_or(0.0),
            ));
        }
    }
    if rows.is_empty() && paces.is_empty() {
        return format!("no transfers\n{errors}");
    }
    table(&["FROM", "PARTITION", "TO", "STATE", "SENT", "ERROR"], rows) + &paces + &errors
}

/// Why the cluster is not healthy as `status` (one node's view) shows it,
/// or None when it is: the node serves, every member is up, no partition is
/// moving, the cluster has at least N members, and (where the node reports
/// them) no hints wait for delivery.
pub fn unhealthy(status: &Value) -> Option<String> {
    if let Some(state) = status["state"].as_str()
        && state != "serving"
    {
        return Some(format!("the node is {state}"));
    }
    let down: Vec<&str> = status["members"]
        .as_array()
        .map(|ms| ms.iter().filter(|m| m["status"] != "up").filter_map(|m| m["address"].as_str()).collect())
        .unwrap_or_default();
    if !down.is_empty() {
        return Some(format!("members down: {}", down.join(", ")));
    }
    if status["ring"]["moving"] == true {
        let pending = status["ring"]["pending_transfers"].as_u64().unwrap_or(0);
        return Some(format!("partitions are moving ({pending} transfers pending)"));
    }
    if status["under_replicated"] == true {
        return Some("fewer members than N: keys are under-replicated".into());
    }
    // Every partition has one owner; owners that are not members (a node
    // replaced or removed whose partitions have not been planned away yet)
    // leave the members' claims short of the partition count.
    if let (Some(partitions), Some(members)) = (status["partitions"].as_u64(), status["members"].as_array()) {
        let owned: u64 = members.iter().filter_map(|m| m["claim"].as_u64()).sum();
        if owned < partitions {
            return Some(format!(
                "{} of {partitions} partitions are owned by nodes that are no longer members (not yet moved)",
                partitions - owned
            ));
        }
    }
    if let Some(hints) = status["hints"].as_object() {
        let queued: u64 = hints.values().filter_map(Value::as_u64).sum();
        if queued > 0 {
            return Some(format!("{queued} hinted writes wait for delivery"));
        }
    }
    None
}

fn backup_table(b: &Value) -> String {
    let mib = b["bytes"].as_u64().map_or("-".into(), |n| format!("{:.1} MiB", n as f64 / (1024.0 * 1024.0)));
    let rows = [
        ("backup", text(&b["path"])),
        ("node", format!("{} (id {})", text(&b["node"]), text(&b["node_id"]))),
        ("cluster", text(&b["cluster_id"])),
        ("ring epoch", text(&b["ring_epoch"])),
        ("files", text(&b["files"])),
        ("size", mib),
        ("objects (estimate)", text(&b["objects"])),
        ("started at (unix ms)", text(&b["started_at_ms"])),
        ("took", format!("{} ms", text(&b["took_ms"]))),
    ];
    let mut out = String::new();
    for (name, value) in rows {
        out.push_str(&format!("{name:<22}{value}\n"));
    }
    out
}

fn print(json: bool, value: &Value, table: fn(&Value) -> String) {
    if json {
        println!("{}", serde_json::to_string_pretty(value).expect("a JSON value serialises"));
    } else {
        print!("{}", table(value));
    }
}

fn print_claim(json: bool, claim: &str) {
    if json {
        let partitions: Value = claim.trim().parse::<u64>().map(Value::from).unwrap_or(Value::Null);
        println!("{}", serde_json::json!({ "claim": partitions }));
    } else {
        println!("{}", claim.trim());
    }
}

/// Keys go into the path as the store API expects them: percent-encoded,
/// with `/` kept (a key may contain slashes).
fn encode_key(key: &str) -> String {
    const KEY: &AsciiSet = &NON_ALPHANUMERIC.remove(b'/').remove(b'-').remove(b'_').remove(b'.').remove(b'~');
    utf8_percent_encode(key, KEY).to_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn status_table(s: &Value) -> String {
    let rows = [
        ("node", text(&s["node"])),
        ("node id", text(&s["node_id"])),
        ("https", text(&s["http_tls"])),
        ("cluster", text(&s["cluster_id"])),
        ("state", text(&s["state"])),
        ("version", text(&s["version"])),
        ("partitions", text(&s["partitions"])),
        ("n / r / w", format!("{} / {} / {}", text(&s["n_val"]), text(&s["r"]), text(&s["w"]))),
        ("ring epoch", text(&s["ring"]["epoch"])),
        ("moving", text(&s["ring"]["moving"])),
        ("pending transfers", text(&s["ring"]["pending_transfers"])),
        ("members", s["members"].as_array().map_or(0, Vec::len).to_string()),
        ("claim", text(&s["claim"])),
        (
            "storage",
            format!(
                "{}, {} objects, {} bytes",
                text(&s["storage"]["engine"]),
                text(&s["storage"]["objects"]),
                text(&s["storage"]["bytes"])
            ),
        ),
        ("health", unhealthy(s).unwrap_or_else(|| "healthy".into())),
    ];
    let mut out = table(&["", ""], rows.iter().map(|(k, v)| vec![k.to_string(), v.clone()]).collect());
    // The first line is the (empty) header.
    out.drain(..out.find('\n').map_or(0, |i| i + 1));
    out
}

fn members_table(members: &Value) -> String {
    let rows = members
        .as_array()
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    vec![
                        text(&m["address"]),
                        text(&m["id"]),
                        text(&m["status"]),
                        text(&m["claim"]),
                        text(&m["wanted_claim"]),
                        if m["leaving"] == true { "leaving".into() } else { String::new() },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    table(&["ADDRESS", "ID", "STATUS", "OWNS", "WANTS", ""], rows)
}

fn ring_table(ring: &Value) -> String {
    let mut out = format!(
        "epoch {}, {} partitions, n_val {}{}\n",
        text(&ring["epoch"]),
        text(&ring["partitions"]),
        text(&ring["n_val"]),
        if ring["moving"] == true { ", moving" } else { "" }
    );
    let rows = ring["nodes"]
        .as_array()
        .map(|ns| {
            ns.iter()
                .map(|n| {
                    vec![
                        text(&n["node"]),
                        text(&n["node_id"]),
                        text(&n["partitions"]),
                        n["share"].as_f64().map_or("-".into(), |s| format!("{s:.1} %")),
                        text(&n["target_partitions"]),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(&["NODE", "ID", "OWNS", "SHARE", "AFTER MOVE"], rows));
    if let Some(moving) = ring["moving_partitions"].as_array().filter(|m| !m.is_empty()) {
        let rows = moving.iter().map(|m| vec![text(&m["partition"]), list(&m["from"]), list(&m["to"])]).collect();
        out.push('\n');
        out.push_str(&table(&["PARTITION", "HOLDERS", "NEW HOLDERS"], rows));
    }
    out
}

fn preflist_table(p: &Value) -> String {
    let mut out = format!("partition {}\n", text(&p["partition"]));
    let rows = p["preflist"]
        .as_array()
        .map(|es| {
            es.iter()
                .map(|e| {
                    vec![
                        text(&e["node"]),
                        text(&e["node_id"]),
                        text(&e["partition"]),
                        if e["primary"] == true { "primary".into() } else { "fallback".into() },
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(&["NODE", "ID", "PARTITION", "ROLE"], rows));
    out
}

fn replicas_table(r: &Value) -> String {
    let mut out = format!("partition {}\n", text(&r["partition"]));
    let rows = r["replicas"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|c| {
                    let copy = if c["answered"] != true {
                        "no answer".to_owned()
                    } else {
                        let siblings: Vec<String> = c["siblings"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|s| {
                                let sha = text(&s["sha1"]);
                                let short = sha.get(..12).unwrap_or(&sha).to_owned();
                                if s["deleted"] == true { "deleted".to_owned() } else { short }
                            })
                            .collect();
                        if siblings.is_empty() { "absent".to_owned() } else { siblings.join(" ") }
                    };
                    vec![
                        text(&c["node"]),
                        if c["primary"] == true { "primary".into() } else { "fallback".into() },
                        copy,
                        c["context"].as_str().filter(|c| !c.is_empty()).unwrap_or("-").to_owned(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(&["NODE", "ROLE", "SIBLINGS (SHA-1)", "CONTEXT"], rows));
    out
}

/// `/admin/plan`'s answer: staged changes, ownership before and after, what
/// would move, and departures under way.
fn plan_table(p: &Value) -> String {
    let mut out = String::new();
    let staged: Vec<Vec<String>> = p["staged"]
        .as_array()
        .map(|s| {
            s.iter().map(|c| vec![text(&c["action"]), text(&c["node"]), text(&c["address"]), text(&c["by"])]).collect()
        })
        .unwrap_or_default();
    if staged.is_empty() {
        out.push_str("no staged changes\n");
    } else {
        out.push_str(&table(&["ACTION", "NODE", "ADDRESS", "BY"], staged));
        out.push_str(&format!(
            "committing moves {} partitions: {} copies to send (about {} objects){}\n",
            text(&p["partitions_moving"]),
            text(&p["copies_to_send"]),
            text(&p["objects_to_move_estimate"]),
            if p["commit_requested"] == true { "; commit requested" } else { "" },
        ));
    }
    out.push_str(&format!(
        "ring epoch {}{}\n",
        text(&p["ring_epoch"]),
        if p["moving"] == true { ", a move is running" } else { "" }
    ));
    let ownership: Vec<Vec<String>> = p["ownership"]
        .as_array()
        .map(|o| {
            o.iter()
                .map(|n| vec![text(&n["address"]), text(&n["node"]), text(&n["before"]), text(&n["after"])])
                .collect()
        })
        .unwrap_or_default();
    out.push_str(&table(&["ADDRESS", "ID", "OWNS", "AFTER"], ownership));
    if let Some(departures) = p["departures"].as_array().filter(|d| !d.is_empty()) {
        let rows = departures.iter().map(|d| vec![text(&d["node"]), text(&d["state"]), text(&d["by"])]).collect();
        out.push_str(&table(&["DEPARTING", "STATE", "BY"], rows));
    }
    out
}

fn list(v: &Value) -> String {
    v.as_array().map(|a| a.iter().map(text).collect::<Vec<_>>().join(", ")).unwrap_or_else(|| text(v))
}

/// Left-aligned columns, two spaces apart.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut l = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(cell);
            } else {
                l.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        l.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// One node's HTTP API.
struct Node {
    base: String,
    http: Client<Connector, Full<Bytes>>,
    tls: ClientTls,
    timeout: Duration,
    /// Sent as `Authorization: Bearer` with every request.
    token: Option<String>,
}

impl Node {
    fn new(address: &str, tls: &ClientTls, timeout: Duration) -> Node {
        let http = Client::builder(TokioExecutor::new()).build(tls.connector(HttpConnector::new()));
        Node { base: tls.base_url(address), http, tls: tls.clone(), timeout, token: None }
    }

    fn with_token(mut self, token: Option<String>) -> Node {
        self.token = token;
        self
    }

    fn with_timeout(mut self, timeout: Duration) -> Node {
        self.timeout = timeout;
        self
    }

    /// Another member, at the HTTP address the cluster lists for it: asked
    /// the way this one is (HTTPS when the CLI speaks it, with its token),
    /// on the same pool.
    fn peer(&self, address: &str) -> Node {
        Node {
            base: self.tls.base_url(address),
            http: self.http.clone(),
            tls: self.tls.clone(),
            timeout: self.timeout,
            token: self.token.clone(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<String>) -> Result<(StatusCode, Bytes), Failure> {
        let uri = format!("{}{path}", self.base);
        let mut request = http::Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            request = request.header(http::header::AUTHORIZATION, format!("Bearer {}", token.trim()));
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| Failure::Usage(format!("cannot make a request to {uri} (bad --node or --token?): {e}")))?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                let mut why = chain(&e);
                // What a TLS port answers a plain request: an alert, no HTTP.
                if !self.base.starts_with("https://") && why.contains("invalid HTTP version") {
                    why.push_str(" (does the node speak HTTPS? give --cacert FILE)");
                }
                Failure::Cluster(format!("{uri}: {why}"))
            })?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| Failure::Cluster(format!("{uri}: {e}")))?.to_bytes();
            Ok((parts.status, body))
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(Failure::Cluster(format!("{uri}: no answer within {:?}", self.timeout))))
    }

    /// The body of a successful answer; a failure names the status and the
    /// node's message.
    async fn text(&self, method: Method, path: &str, body: Option<String>) -> Result<String, Failure> {
        let (status, body) = self.call(method, path, body).await?;
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        if status.is_success() {
            Ok(text)
        } else if status == StatusCode::BAD_REQUEST {
            Err(Failure::Usage(format!("{status}: {text}")))
        } else {
            Err(Failure::Cluster(format!("{status}: {text}")))
        }
    }

    async fn json(&self, method: Method, path: &str, body: Option<String>) -> Result<Value, Failure> {
        Ok(self.json_with_status(method, path, body).await?.1)
    }

    /// [`Node::json`], with the (successful) status, where 200 and 202 differ.
    async fn json_with_status(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Value), Failure> {
        let (status, body) = self.call(method, path, body).await?;
        let text = String::from_utf8_lossy(&body).trim().to_owned();
        if status == StatusCode::BAD_REQUEST {
            return Err(Failure::Usage(format!("{status}: {text}")));
        }
        if !status.is_success() {
            return Err(Failure::Cluster(format!("{status}: {text}")));
        }
        let value = serde_json::from_str(&text)
            .map_err(|e| Failure::Cluster(format!("the node's answer is not JSON ({e}): {text}")))?;
        Ok((status, value))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn healthy() -> Value {
        json!({
            "state": "serving",
            "members": [{"address": "a", "status": "up"}, {"address": "b", "status": "up"}],
            "ring": {"moving": false, "pending_transfers": 0},
            "under_replicated": false,
        })
    }

    #[test]
    fn health_names_what_is_wrong() {
        assert_eq!(unhealthy(&healthy()), None);
        let mut s = healthy();
        s["members"][1]["status"] = json!("down");
        assert_eq!(unhealthy(&s).unwrap(), "members down: b");
        let mut s = healthy();
        s["ring"] = json!({"moving": true, "pending_transfers": 3});
        assert!(unhealthy(&s).unwrap().contains("3 transfers pending"));
        let mut s = healthy();
        s["under_replicated"] = json!(true);
        assert!(unhealthy(&s).unwrap().contains("under-replicated"));
        let mut s = healthy();
        s["hints"] = json!({"a": 0, "b": 2});
        assert!(unhealthy(&s).unwrap().contains("2 hinted writes"));
        let mut s = healthy();
        s["state"] = json!("removed");
        assert!(unhealthy(&s).unwrap().contains("removed"));
        // A replaced node's partitions not yet planned away (nothing moves).
        let mut s = healthy();
        s["partitions"] = json!(64);
        s["members"][0]["claim"] = json!(42);
        s["members"][1]["claim"] = json!(0);
        assert!(unhealthy(&s).unwrap().contains("22 of 64 partitions are owned by nodes that are no longer members"));
        s["members"][1]["claim"] = json!(22);
        assert_eq!(unhealthy(&s), None);
    }

    #[test]
    fn a_senders_time_left_comes_from_the_partitions_it_finished() {
        let status = |done: u64, pending: u64| {
            let transfers: Vec<Value> = (0..done)
                .map(|p| serde_json::json!({"partition": p, "to": ["b"], "state": "done", "objects_sent": 100}))
                .chain([serde_json::json!({"partition": 99, "to": ["b"], "state": "running", "objects_sent": 0})])
                .collect();
            serde_json::json!({"ring": {"my_pending_transfers": pending}, "transfers": transfers})
        };
        let mut entry = serde_json::json!({"node": "a:8880"});
        estimate(&mut entry, &status(2, 10), &status(6, 6), Some(2.0));
        assert_eq!(entry["pending"], 6);
        assert_eq!(entry["partitions_per_second"], 2.0);
        assert_eq!(entry["objects_per_second"], 200.0);
        assert_eq!(entry["eta_seconds"], 3.0);
        let table = transfers_table(&serde_json::json!([entry]));
        assert!(
            table.contains("a:8880: 6 partitions to send, 2 partitions/s, 200 objects/s, time left about 3 s"),
            "{table}"
        );
        // Nothing finished within the sample: no estimate yet.
        let mut entry = serde_json::json!({"node": "a:8880"});
        estimate(&mut entry, &status(2, 10), &status(2, 10), Some(1.0));
        assert_eq!(entry["eta_seconds"], Value::Null);
        assert!(transfers_table(&serde_json::json!([entry])).contains("time left unknown"));
        // Nothing to send.
        let mut entry = serde_json::json!({"node": "a:8880"});
        estimate(&mut entry, &status(0, 0), &status(0, 0), None);
        assert_eq!(
            (entry["pending"].clone(), entry["eta_seconds"].clone()),
            (serde_json::json!(0), serde_json::json!(0))
        );
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONG"], vec![vec!["xyz".into(), "1".into()], vec!["p".into(), "22".into()]]);
        assert_eq!(t, "A    LONG\nxyz  1\np    22\n");
    }

    #[test]
    fn keys_keep_slashes_and_escape_the_rest() {
        assert_eq!(encode_key("a/b c?d"), "a/b%20c%3Fd");
    }
}
