//! Client security against real processes: a 3-node cluster started with
//! `--security`, its first admin token from `DATA_DIR/admin.token`, and the
//! client suite: no token, a wrong one, one without the grant, an expired
//! one and a revoked one, on reads, writes, deletes and admin routes, each
//! refused with 401 or 403, the reason counted, and the data unchanged. A
//! token created, regranted and revoked through node 0 takes effect on
//! nodes 1 and 2 by gossip; nodes started with the other setting refuse to
//! start; `/metrics` with its own token; malformed headers get 401, never
//! a 5xx; the admin CLI's token commands with `--token` and
//! `VINZCLORTHO_TOKEN`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, FAST, NodeProc, client, wait_for};
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::{Value, json};

const GOSSIP_DEADLINE: Duration = Duration::from_secs(20);

fn send(method: &str, url: &str, token: Option<&str>, body: Option<&str>) -> Response {
    let mut request = client().request(method.parse().unwrap(), url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body.to_owned());
    }
    request.send().unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `vinzclortho_http_refused_total{reason}` on `node`.
fn refused(node: &NodeProc, reason: &str) -> u64 {
    let text = client().get(node.url("/metrics")).send().unwrap().text().unwrap();
    let prefix = format!("vinzclortho_http_refused_total{{reason=\"{reason}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).map(|v| v.trim().parse::<f64>().unwrap() as u64).unwrap_or(0)
}

fn node_args(ip: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> =
        ["-a", &format!("{ip}:0"), "--cluster-address", &format!("{ip}:0")].iter().map(|s| s.to_string()).collect();
    args.extend(FAST.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn start(dir: &std::path::Path, ip: &str, extra: &[&str]) -> Result<NodeProc, String> {
    let args = node_args(ip, extra);
    NodeProc::try_start(dir, &args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
}

/// Every node sees `n` members up and owning partitions, the same epoch,
/// nothing moving (as `Cluster::wait_converged`, with a token).
fn wait_converged(nodes: &[&NodeProc], token: &str) {
    wait_for("the secure cluster to converge", Duration::from_secs(120), || {
        let mut epochs = Vec::new();
        for node in nodes {
            let s: Value = send("GET", &node.url("/admin/status"), Some(token), None).json().ok()?;
            let up = s["members"].as_array()?.iter().filter(|m| m["status"] == "up" && m["claim"].as_u64() > Some(0));
            if up.count() != nodes.len() || s["ring"]["moving"] != false {
                return None;
            }
            epochs.push(s["ring"]["epoch"].as_u64()?);
        }
        epochs.windows(2).all(|w| w[0] == w[1]).then_some(())
    });
}

fn create_token(node: &NodeProc, admin: &str, body: Value) -> String {
    let r = send("POST", &node.url("/admin/tokens"), Some(admin), Some(&body.to_string()));
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().unwrap();
    created["token"].as_str().unwrap().to_owned()
}

fn admin_cli(node: &NodeProc, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.arg("admin").arg("--node").arg(&node.http).args(args).env_remove("VINZCLORTHO_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run vinzclortho admin")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_secure_cluster_refuses_every_bad_credential_and_spreads_token_changes() {
    let dir = tempfile::tempdir().unwrap();
    let ip = |i: usize| format!("127.0.161.{}", i + 1);
    let data = |i: usize| dir.path().join(format!("node{i}"));
    let n0 = start(&data(0), &ip(0), &["--security"]).unwrap();

    // The first admin token: in node 0's data directory only, 0600, once.
    let token_file = data(0).join("admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "admin.token must be private");
    let admin = std::fs::read_to_string(&token_file).unwrap().trim().to_owned();
    assert!(admin.starts_with("vc1_") && admin.len() == 47, "{admin}");
    let log = std::fs::read_to_string(&n0.stderr_path).unwrap();
    assert!(log.contains("admin.token") && !log.contains(&admin), "the path is logged, never the token");

    let seed = n0.cluster.clone();
    let n1 = start(&data(1), &ip(1), &["--security", "-j", &seed]).unwrap();
    let n2 = start(&data(2), &ip(2), &["--security", "-j", &seed]).unwrap();
    wait_converged(&[&n0, &n1, &n2], &admin);
    assert!(!data(1).join("admin.token").exists(), "only the creator writes one");

    // A joiner without --security is refused before it becomes a member.
    let refused_joiner = start(&data(3), &ip(3), &["-j", &seed]).err().expect("the node must refuse to start");
    assert!(refused_joiner.contains("security"), "{refused_joiner}");
    let status: Value = send("GET", &n0.url("/admin/status"), Some(&admin), None).json().unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 3, "the refused joiner left no record");
    assert_eq!(status["security"], true);

    // Data written with the admin token.
    let key = n0.url("/store/k");
    assert!(send("PUT", &key, Some(&admin), Some("v0")).status().is_success());

    // Tokens for the suite: a reader, one that expires at once, a revoked one.
    let reader = create_token(
        &n0,
        &admin,
        json!({"name": "reader", "grants": [{"permissions": ["read"], "scope": "default/default"}]}),
    );
    let expiring = create_token(
        &n0,
        &admin,
        json!({"name": "expiring", "grants": [{"permissions": ["read", "write", "delete", "admin"], "scope": "*"}],
               "expires_in_s": 1}),
    );
    let revoked = create_token(
        &n0,
        &admin,
        json!({"name": "revoked", "grants": [{"permissions": ["read", "write", "delete", "admin"], "scope": "*"}]}),
    );
    assert_eq!(send("GET", &key, Some(&revoked), None).status(), StatusCode::OK, "works until revoked");
    assert_eq!(send("DELETE", &n0.url("/admin/tokens/revoked"), Some(&admin), None).status(), StatusCode::OK);
    wait_for("the expiring token to expire", Duration::from_secs(10), || {
        (send("GET", &key, Some(&expiring), None).status() == StatusCode::UNAUTHORIZED).then_some(())
    });
    assert_eq!(send("GET", &key, Some(&reader), None).text().unwrap(), "v0");

    // Every bad credential on every kind of route.
    let credentials: [(&str, Option<&str>, &str); 5] = [
        ("no token", None, "missing"),
        ("a wrong token", Some("vc1_not-a-token-of-this-cluster"), "unknown"),
        ("a token without the grant", Some(&reader), "forbidden"),
        ("an expired token", Some(&expiring), "expired"),
        ("a revoked token", Some(&revoked), "revoked"),
    ];
    let create_evil = json!({"name": "evil", "grants": [{"permissions": ["admin"], "scope": "*"}]}).to_string();
    let operations: [(&str, String, Option<&str>); 6] = [
        ("GET", key.clone(), None),
        ("PUT", key.clone(), Some("evil")),
        ("DELETE", key.clone(), None),
        ("GET", n0.url("/admin/status"), None),
        ("PUT", n0.url("/admin/claim"), Some("0")),
        ("POST", n0.url("/admin/tokens"), Some(create_evil.as_str())),
    ];
    for (what, token, reason) in credentials {
        let before = refused(&n0, reason);
        let mut expected = 0;
        for (method, url, body) in &operations {
            // The reader may read: that one is no refusal.
            if reason == "forbidden" && *method == "GET" && url == &key {
                continue;
            }
            let r = send(method, url, token, *body);
            let status = r.status();
            let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
            let message = r.text().unwrap();
            if reason == "forbidden" {
                assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {method} {url}: {message}");
            } else {
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {method} {url}: {message}");
                assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}: {method} {url}");
            }
            assert_eq!(message.trim().lines().count(), 1, "one line: {message:?}");
            expected += 1;
        }
        assert_eq!(refused(&n0, reason) - before, expected, "{what}: counted as {reason}");
    }

    // Nothing changed: the key, the claim, the tokens.
    for node in [&n0, &n1, &n2] {
        assert_eq!(send("GET", &node.url("/store/k"), Some(&admin), None).text().unwrap(), "v0");
    }
    let claim = send("GET", &n0.url("/admin/claim"), Some(&admin), None).text().unwrap();
    assert_ne!(claim.trim(), "0", "the claim was not changed");
    let tokens: Value = send("GET", &n0.url("/admin/tokens"), Some(&admin), None).json().unwrap();
    let names: Vec<&str> = tokens.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "expiring", "reader", "revoked"], "no evil token");
    assert!(!tokens.to_string().contains("hash"), "hashes are never shown: {tokens}");
    // Open routes stay open.
    assert_eq!(send("GET", &n1.url("/ping"), None, None).status(), StatusCode::OK);

    // Malformed headers: 401 (or a 4xx from the HTTP layer), never a 5xx.
    let url = n1.url("/store/k");
    let raw = |value: Vec<u8>| {
        client()
            .get(&url)
            .header("authorization", reqwest::header::HeaderValue::from_bytes(&value).unwrap())
            .send()
            .unwrap()
            .status()
    };
    for value in [
        b"Basic dXNlcjpwYXNz".to_vec(),
        b"Bearer".to_vec(),
        b"Bearer ".to_vec(),
        b"vc1_abc".to_vec(),
        b"Bearer \xff\xfe\x80".to_vec(),
        format!("Bearer {}", "x".repeat(1100)).into_bytes(),
        format!("Bearer {admin} extra").into_bytes(),
    ] {
        assert_eq!(raw(value.clone()), StatusCode::UNAUTHORIZED, "{:?}", String::from_utf8_lossy(&value));
    }
    assert_eq!(raw(format!("Bearer {}", "x".repeat(20_000)).into_bytes()), StatusCode::UNAUTHORIZED, "huge");

    // A token made on node 0 works on nodes 1 and 2 once gossiped; a new
    // grant and a revocation spread the same way.
    let app =
        create_token(&n0, &admin, json!({"name": "app", "grants": [{"permissions": ["read"], "scope": "default"}]}));
    for node in [&n1, &n2] {
        wait_for("the new token on every node", GOSSIP_DEADLINE, || {
            (send("GET", &node.url("/store/k"), Some(&app), None).status() == StatusCode::OK).then_some(())
        });
        assert_eq!(send("PUT", &node.url("/store/k"), Some(&app), Some("x")).status(), StatusCode::FORBIDDEN);
    }
    let regrant = json!({"grants": [{"permissions": ["write"], "scope": "default/default"}]}).to_string();
    let r = send("PUT", &n0.url("/admin/tokens/app/grants"), Some(&admin), Some(&regrant));
    assert_eq!(r.status(), StatusCode::OK);
    for node in [&n1, &n2] {
        wait_for("the new grant on every node", GOSSIP_DEADLINE, || {
            (send("GET", &node.url("/store/k"), Some(&app), None).status() == StatusCode::FORBIDDEN).then_some(())
        });
    }
    assert!(send("PUT", &n2.url("/store/k"), Some(&app), Some("v1")).status().is_success());
    assert_eq!(send("DELETE", &n0.url("/admin/tokens/app"), Some(&admin), None).status(), StatusCode::OK);
    for node in [&n1, &n2] {
        wait_for("the revocation on every node", GOSSIP_DEADLINE, || {
            // Write-only now: a read is forbidden until the revocation
            // arrives, then unauthenticated.
            (send("GET", &node.url("/store/k"), Some(&app), None).status() == StatusCode::UNAUTHORIZED).then_some(())
        });
        assert_eq!(send("PUT", &node.url("/store/k"), Some(&app), Some("late")).status(), StatusCode::UNAUTHORIZED);
    }
    // (v1 was written without a context: a sibling of v0.)
    let value = send("GET", &n1.url("/store/k"), Some(&admin), None).text().unwrap();
    assert!(value.contains("v1") && !value.contains("late") && !value.contains("evil"), "{value}");

    // Bad token bodies: 400 with a message; unknown names 404.
    for bad in [
        "not json",
        r#"{"name": "x", "grants": [{"permissions": ["root"], "scope": "*"}]}"#,
        r#"{"name": "x", "grants": [{"permissions": ["admin"], "scope": "default"}]}"#,
        r#"{"name": "bad name", "grants": []}"#,
        r#"{"name": "x", "grants": [], "expires_in_s": 0}"#,
    ] {
        let r = send("POST", &n0.url("/admin/tokens"), Some(&admin), Some(bad));
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(!r.text().unwrap().trim().is_empty());
    }
    assert_eq!(send("DELETE", &n0.url("/admin/tokens/nobody"), Some(&admin), None).status(), StatusCode::NOT_FOUND);
    let reuse = json!({"name": "revoked", "grants": []}).to_string();
    assert_eq!(send("POST", &n0.url("/admin/tokens"), Some(&admin), Some(&reuse)).status(), StatusCode::CONFLICT);

    // The admin CLI: --token and VINZCLORTHO_TOKEN; without one, exit 1.
    let out = admin_cli(&n1, &["token", "list"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("401"), "{}", text(&out));
    let out = admin_cli(&n1, &["--token", &admin, "token", "create", "cli", "--grant", "read,list:default"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let cli_token = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(cli_token.starts_with("vc1_"), "{}", text(&out));
    wait_for("the CLI's token on node 2", GOSSIP_DEADLINE, || {
        // 300: the key has siblings by now (v0 and v1).
        let status = send("GET", &n2.url("/store/k"), Some(&cli_token), None).status();
        (status == StatusCode::MULTIPLE_CHOICES).then_some(())
    });
    let env = [("VINZCLORTHO_TOKEN", admin.as_str())];
    let out = admin_cli(&n1, &["token", "grant", "cli", "--grant", "read:*", "--grant", "write:default"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("read:*") && text(&out).contains("write:default"), "{}", text(&out));
    let out = admin_cli(&n1, &["token", "list", "--json"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli = listed.as_array().unwrap().iter().find(|t| t["name"] == "cli").unwrap().clone();
    assert_eq!(cli["revoked"], false);
    let out = admin_cli(&n1, &["token", "revoke", "cli"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("revoked"), "{}", text(&out));
    let out = admin_cli(&n1, &["token", "create", "x", "--grant", "admin:default"], &env);
    assert_eq!(out.status.code(), Some(2), "a bad grant is a usage error: {}", text(&out));
    let out = admin_cli(&n1, &["--token", &reader, "status"], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("403"), "{}", text(&out));

    // The bench sends the token too (--token, VINZCLORTHO_TOKEN); in check
    // mode any refused request fails the run.
    let bench = |extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["bench", "--nodes", &n0.http, "--check", "--ops", "40", "-c", "2", "-q"]).args(extra);
        cmd.env_remove("VINZCLORTHO_TOKEN");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run vinzclortho bench")
    };
    let out = bench(&["--token", &admin], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = bench(&[], &[("VINZCLORTHO_TOKEN", admin.as_str())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = bench(&[], &[]);
    assert_ne!(out.status.code(), Some(0), "without a token every request is refused: {}", text(&out));

    // Restarting the creator without --security is refused; with it, it
    // comes back and leaves its admin.token as it was.
    let (http, cluster) = (n0.http.clone(), n0.cluster.clone());
    n0.kill9();
    let mut args = vec!["-a", &http, "--cluster-address", &cluster];
    args.extend_from_slice(FAST);
    let refused_restart = NodeProc::try_start(&data(0), &args, &[]).err().expect("the node must refuse to start");
    assert!(refused_restart.contains("--security"), "{refused_restart}");
    args.push("--security");
    let n0 = NodeProc::try_start(&data(0), &args, &[]).unwrap();
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), admin, "a restart writes no new token");
    assert!(send("GET", &n0.url("/store/k"), Some(&admin), None).text().unwrap().contains("v1"));
    drop((n0, n1, n2));
}

#[test]
fn a_node_with_security_cannot_join_a_cluster_without_it() {
    let dir = tempfile::tempdir().unwrap();
    let plain = start(&dir.path().join("plain"), "127.0.162.1", &[]).unwrap();
    let refused = start(&dir.path().join("secure"), "127.0.162.2", &["--security", "-j", &plain.cluster])
        .err()
        .expect("the node must refuse to start");
    assert!(refused.contains("security"), "{refused}");
    assert!(!dir.path().join("secure").join("admin.token").exists(), "a joiner never makes an admin token");
    // Security off: no credential needed.
    assert!(send("PUT", &plain.url("/store/k"), None, Some("v")).status().is_success());
    let status: Value = send("GET", &plain.url("/admin/status"), None, None).json().unwrap();
    assert_eq!(status["members"].as_array().unwrap().len(), 1);
    assert_eq!(status["security"], false);
}

#[test]
fn metrics_need_their_own_token_when_a_token_file_is_given() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.token");
    std::fs::write(&file, "scrape-secret\n").unwrap();
    let path = file.to_str().unwrap().to_owned();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let world_readable = start(&dir.path().join("a"), "127.0.163.1", &["--metrics-token-file", &path])
        .err()
        .expect("the node must refuse to start");
    assert!(world_readable.contains("world-readable"), "{world_readable}");
    let missing = dir.path().join("missing").to_str().unwrap().to_owned();
    let refused = start(&dir.path().join("b"), "127.0.163.1", &["--metrics-token-file", &missing])
        .err()
        .expect("the node must refuse to start");
    assert!(refused.contains("metrics-token-file"), "{refused}");

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let node = start(&dir.path().join("c"), "127.0.163.1", &["--metrics-token-file", &path]).unwrap();
    let metrics = node.url("/metrics");
    let r = send("GET", &metrics, None, None);
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    assert_eq!(send("GET", &metrics, Some("wrong"), None).status(), StatusCode::UNAUTHORIZED);
    let r = send("GET", &metrics, Some("scrape-secret"), None);
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().unwrap();
    let line = text.lines().find(|l| l.starts_with("vinzclortho_http_refused_total{reason=\"missing\"}")).unwrap();
    assert!(line.ends_with(" 1"), "{line}");
    // Security is off: everything else stays open.
    assert!(send("PUT", &node.url("/store/k"), None, Some("v")).status().is_success());
    assert_eq!(send("GET", &node.url("/admin/status"), None, None).status(), StatusCode::OK);
}
