//! `vinzclortho admin` against a real cluster: every command's table and
//! JSON, and the exit codes scripts rely on (0 success, 1 the cluster said
//! no or is unhealthy, 2 bad usage).

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, Cluster, wait_for};

fn admin(node: &str, args: &[&str]) -> Output {
    Command::new(BIN).arg("admin").arg("--node").arg(node).args(args).output().expect("run vinzclortho admin")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(o), stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(o)))
}

#[test]
fn admin_commands_show_the_cluster_and_exit_codes_say_how_it_went() {
    let mut cluster = Cluster::start(61, 4);
    let node = cluster.node(0).http.clone();
    let addresses: Vec<String> = cluster.running().map(|n| n.http.clone()).collect();

    // status and members: every member, up.
    let status = json(&admin(&node, &["--json", "status"]));
    assert_eq!(status["node"], node.as_str());
    assert_eq!(status["members"].as_array().unwrap().len(), 4);
    let table = stdout(&admin(&node, &["status"]));
    assert!(table.contains("healthy") && table.contains(&node), "{table}");
    let members = json(&admin(&node, &["members", "--json"]));
    assert_eq!(members.as_array().unwrap().len(), 4);
    let table = stdout(&admin(&node, &["members"]));
    assert!(table.starts_with("ADDRESS"), "{table}");
    for a in &addresses {
        assert!(table.lines().any(|l| l.starts_with(a.as_str()) && l.contains(" up ")), "{a}: {table}");
    }

    // ring: the shares add up to the whole ring, nothing moves.
    let ring = json(&admin(&node, &["ring", "--json"]));
    let nodes = ring["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    let owned: u64 = nodes.iter().map(|n| n["partitions"].as_u64().unwrap()).sum();
    assert_eq!(owned, ring["partitions"].as_u64().unwrap());
    let share: f64 = nodes.iter().map(|n| n["share"].as_f64().unwrap()).sum();
    assert!((share - 100.0).abs() < 0.01, "{share}");
    assert_eq!(ring["moving"], false);
    assert!(ring["moving_partitions"].as_array().unwrap().is_empty());
    assert!(stdout(&admin(&node, &["ring"])).contains("SHARE"));

    // preflist: N distinct primaries; the same as the HTTP endpoint.
    let preflist = json(&admin(&node, &["preflist", "some/key with space", "--json"]));
    let entries = preflist["preflist"].as_array().unwrap();
    assert_eq!(entries.len(), 3);
    let direct: serde_json::Value = common::client()
        .get(format!("http://{node}/admin/preflist/some/key%20with%20space"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(preflist, direct);
    assert!(stdout(&admin(&node, &["preflist", "k"])).contains("primary"));

    // claim get|set, and a bad claim is the caller's mistake (exit 2).
    let owned_before = stdout(&admin(&node, &["claim", "get"])).trim().parse::<u64>().unwrap();
    assert!(owned_before > 0);
    let set = admin(&node, &["claim", "set", "4", "--json"]);
    assert_eq!(json(&set)["claim"].as_u64(), Some(owned_before), "partitions move later, after their data");
    // The move settles: the node gives partitions away and wait-healthy says
    // so only once nothing moves any more.
    let healthy = admin(&node, &["wait-healthy", "--timeout", "120"]);
    assert_eq!(healthy.status.code(), Some(0), "{}{}", stdout(&healthy), stderr(&healthy));
    wait_for("the claim to settle", Duration::from_secs(60), || {
        let owned = stdout(&admin(&node, &["claim", "get"])).trim().parse::<u64>().ok()?;
        (owned < owned_before).then_some(())
    });
    // transfers: one entry per member, each with the transfers it sent for
    // the last move (node 0 gave partitions away: it sent some).
    let transfers = json(&admin(&node, &["transfers", "--json", "--sample-ms", "200"]));
    let transfers = transfers.as_array().unwrap();
    assert_eq!(transfers.len(), 4, "{transfers:?}");
    let mine = transfers.iter().find(|t| t["node"] == node.as_str()).unwrap();
    let sent: Vec<&serde_json::Value> = mine["transfers"].as_array().unwrap().iter().collect();
    assert!(!sent.is_empty() && sent.iter().all(|t| t["state"] == "done"), "{mine}");
    assert!(stdout(&admin(&node, &["transfers"])).starts_with("FROM"));
    let bad = admin(&node, &["claim", "set", "lots"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let unknown = admin(&node, &["no-such-command"]);
    assert_eq!(unknown.status.code(), Some(2));

    // An unreachable node is a failure (1) that names the address.
    let gone = admin("127.0.61.200:9", &["status"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(stderr(&gone).contains("127.0.61.200:9"), "{}", stderr(&gone));

    // A member down: wait-healthy gives up with 1 and says who.
    let (down, _) = cluster.kill9(3);
    wait_for("node 0 to see node 3 down", Duration::from_secs(30), || {
        let s = json(&admin(&node, &["members", "--json"]));
        s.as_array()?.iter().any(|m| m["address"] == down.as_str() && m["status"] == "down").then_some(())
    });
    let unhealthy = admin(&node, &["wait-healthy", "--timeout", "1"]);
    assert_eq!(unhealthy.status.code(), Some(1));
    assert!(stderr(&unhealthy).contains(&down), "{}", stderr(&unhealthy));

    // replicas: each copy of a key as its node holds it; the stopped node's
    // copy, if it is a replica of the key, did not answer.
    let http = common::client();
    let put = http.put(format!("http://{node}/store/cli%20key?w=2")).body("v").send().unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let replicas = json(&admin(&node, &["replicas", "cli key", "--json"]));
    let direct: serde_json::Value =
        http.get(format!("http://{node}/admin/replicas/cli%20key")).send().unwrap().json().unwrap();
    assert_eq!(replicas["partition"], direct["partition"]);
    let copies = replicas["replicas"].as_array().unwrap();
    assert!(copies.len() >= 3, "{replicas}");
    let holding = copies.iter().filter(|c| c["answered"] == true && !c["siblings"].as_array().unwrap().is_empty());
    assert!(holding.count() >= 2, "W copies: {replicas}");
    let table = stdout(&admin(&node, &["replicas", "cli key"]));
    assert!(table.contains("primary") && table.contains("NODE"), "{table}");
    if copies.iter().any(|c| c["node"] == down.as_str()) {
        assert!(table.lines().any(|l| l.starts_with(down.as_str()) && l.contains("no answer")), "{table}");
    }
    let other = json(&admin(&node, &["replicas", "cli key", "--type", "default", "--bucket", "elsewhere", "--json"]));
    assert!(
        other["replicas"].as_array().unwrap().iter().all(|c| c["siblings"].as_array().is_none_or(|s| s.is_empty()))
    );
}

/// leave, force-remove, replace, plan, plan clear and commit: the staged
/// plan through the CLI, refusals with their exit codes, and a leave
/// committed through it that ends with the node owning nothing and every
/// key still readable.
#[test]
fn admin_commands_stage_show_clear_and_commit_cluster_changes() {
    let cluster = Cluster::start(65, 4);
    let (first, leaver) = (cluster.node(0).http.clone(), cluster.node(3).http.clone());
    let id = |node: &str| json(&admin(node, &["status", "--json"]))["node_id"].as_str().unwrap().to_owned();
    let (first_id, leaver_id) = (id(&first), id(&leaver));
    let http = common::client();
    for i in 0..50 {
        let put = http.put(format!("http://{first}/store/cli-leave-{i}")).body(format!("v{i}")).send().unwrap();
        assert!(put.status().is_success(), "{}", put.status());
    }

    assert!(stdout(&admin(&first, &["plan"])).starts_with("no staged changes"));
    // Refusals: an unknown node and a commit with nothing staged are the
    // cluster saying no (1); removing the node asked, or replacing a node by
    // itself, is a bad request (2).
    let unknown = admin(&first, &["force-remove", "no-such-node"]);
    assert_eq!(unknown.status.code(), Some(1), "{}", stderr(&unknown));
    assert!(stderr(&unknown).contains("not a member"), "{}", stderr(&unknown));
    let itself = admin(&first, &["force-remove", &first_id]);
    assert_eq!(itself.status.code(), Some(2), "{}", stderr(&itself));
    let by_itself = admin(&first, &["replace", &leaver_id, &leaver_id]);
    assert_eq!(by_itself.status.code(), Some(2), "{}", stderr(&by_itself));
    let nothing = admin(&first, &["commit"]);
    assert_eq!(nothing.status.code(), Some(1), "{}", stderr(&nothing));
    assert!(stderr(&nothing).contains("nothing is staged"), "{}", stderr(&nothing));

    // Staged on the leaving node, shown (table and JSON) on another, cleared.
    let staged = json(&admin(&leaver, &["leave", "--json"]));
    assert_eq!(staged["staged"][0]["action"], "leave", "{staged}");
    let shown = wait_for("the staged leave on node 0", Duration::from_secs(30), || {
        let table = stdout(&admin(&first, &["plan"]));
        (table.contains("ACTION") && table.contains(&leaver_id)).then_some(table)
    });
    assert!(shown.contains("leave") && shown.contains("copies to send") && shown.contains("AFTER"), "{shown}");
    let cleared = json(&admin(&first, &["plan", "clear", "--json"]));
    assert!(cleared["staged"].as_array().unwrap().is_empty(), "{cleared}");
    wait_for("the cleared plan on the leaving node", Duration::from_secs(30), || {
        json(&admin(&leaver, &["plan", "--json"]))["staged"].as_array()?.is_empty().then_some(())
    });

    // Staged again and committed through the CLI: the node hands everything
    // over and says it left; every key stays readable.
    json(&admin(&leaver, &["leave", "--json"]));
    let committed = admin(&leaver, &["commit"]);
    // 0 once the claimant applied it; 1 if not within the node's wait (it
    // stays requested and applies later).
    assert!(matches!(committed.status.code(), Some(0 | 1)), "{}{}", stdout(&committed), stderr(&committed));
    wait_for("the leave to finish", Duration::from_secs(120), || {
        let plan = json(&admin(&first, &["plan", "--json"]));
        let left =
            plan["departures"].as_array()?.iter().any(|d| d["node"] == leaver_id.as_str() && d["state"] == "left");
        let owns =
            plan["ownership"].as_array()?.iter().find(|o| o["node"] == leaver_id.as_str()).map(|o| o["before"].clone());
        (left && owns.is_none_or(|b| b == 0)).then_some(())
    });
    for i in 0..50 {
        let got = http.get(format!("http://{first}/store/cli-leave-{i}?r=3")).send().unwrap();
        assert!(got.status().is_success(), "cli-leave-{i}: {}", got.status());
        assert_eq!(got.text().unwrap(), format!("v{i}"));
    }
}
