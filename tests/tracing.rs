//! OpenTelemetry traces across nodes, received by a small OTLP collector
//! (the real collector protocol, from the opentelemetry-proto definitions)
//! that this test runs on loopback.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{NodeProc, client, wait_for};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// A received span: its trace, its name, and the node that sent it.
#[derive(Debug, Clone)]
struct Received {
    trace_id: Vec<u8>,
    name: String,
    instance: String,
}

#[derive(Default, Clone)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let instance = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.instance.id")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received { trace_id: span.trace_id, name: span.name, instance: instance.clone() });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

/// Starts the collector on a free loopback port; returns its endpoint.
fn start_collector(rt: &tokio::runtime::Runtime, collector: Collector) -> String {
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let address = listener.local_addr().unwrap();
    rt.spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(collector))
            .serve_with_incoming(incoming)
            .await
            .unwrap();
    });
    format!("http://{address}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn one_put_is_one_trace_with_spans_from_the_replicas_on_other_nodes() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let collector = Collector::default();
    let endpoint = start_collector(&rt, collector.clone());
    let dir = tempfile::tempdir().unwrap();
    // Export every 100 ms instead of every 5 s.
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")];
    let fast = ["--gossip-interval-ms", "100", "--failure-timeout-ms", "1500", "-p", "16"];
    let start = |i: usize, join: Option<&str>| {
        let ip = format!("127.0.31.{}", i + 1);
        let (http, cluster) = (format!("{ip}:0"), format!("{ip}:0"));
        let mut args = vec!["-a", http.as_str(), "--cluster-address", cluster.as_str()];
        args.extend_from_slice(&fast);
        if let Some(seed) = join {
            args.extend_from_slice(&["-j", seed]);
        }
        NodeProc::try_start(&dir.path().join(format!("n{i}")), &args, &env).unwrap()
    };
    let a = start(0, None);
    let b = start(1, Some(&a.cluster));
    let c = start(2, Some(&a.cluster));
    let nodes = [&a, &b, &c];
    wait_for("three members up everywhere", Duration::from_secs(60), || {
        nodes
            .iter()
            .all(|n| {
                common::status(n).is_some_and(|s| {
                    let m = s["members"].as_array().unwrap();
                    m.len() == 3 && m.iter().all(|m| m["status"] == "up" && m["claim"].as_u64() > Some(0))
                })
            })
            .then_some(())
    });

    // A client-chosen trace id: the node must honour the incoming traceparent.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let r = client().put(a.url("/store/traced")).header("traceparent", &traceparent).body("v").send().unwrap();
    assert!(r.status().is_success());

    let spans = wait_for("the PUT's spans from all three nodes", Duration::from_secs(30), || {
        let spans: Vec<Received> =
            collector.spans.lock().unwrap().iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect();
        let instances: BTreeSet<&str> = spans.iter().map(|s| s.instance.as_str()).collect();
        (instances.len() == 3).then_some(spans)
    });
    let by_node: BTreeMap<&str, Vec<&str>> = spans.iter().fold(BTreeMap::new(), |mut m, s| {
        m.entry(s.instance.as_str()).or_default().push(s.name.as_str());
        m
    });
    let on_a = &by_node[a.http.as_str()];
    assert!(on_a.contains(&"http.request"), "{by_node:?}");
    assert!(on_a.contains(&"coordinator.put"), "{by_node:?}");
    assert!(on_a.contains(&"grpc.client"), "{by_node:?}");
    for other in [&b, &c] {
        let names =
            by_node.get(other.http.as_str()).unwrap_or_else(|| panic!("no spans from {}: {by_node:?}", other.http));
        assert!(names.contains(&"grpc.server"), "{} has {names:?}", other.http);
    }
}

#[test]
fn without_an_endpoint_nothing_is_exported() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let collector = Collector::default();
    let endpoint = start_collector(&rt, collector.clone());
    let dir = tempfile::tempdir().unwrap();
    // The collector runs, but the node is not told about it.
    let node = NodeProc::try_start(
        &dir.path().join("n"),
        &["-a", "127.0.31.9:0"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", ""), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .unwrap();
    for i in 0..20 {
        client().put(node.url(&format!("/store/k{i}"))).body("v").send().unwrap();
    }
    // A node with an endpoint proves the collector works, so silence from
    // the first one means something.
    let traced = NodeProc::try_start(
        &dir.path().join("t"),
        &["-a", "127.0.31.10:0"],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()), ("OTEL_BSP_SCHEDULE_DELAY", "100")],
    )
    .unwrap();
    client().put(traced.url("/store/k")).body("v").send().unwrap();
    wait_for("spans from the traced node", Duration::from_secs(30), || {
        collector.spans.lock().unwrap().iter().any(|s| s.instance == traced.http).then_some(())
    });
    assert!(
        !collector.spans.lock().unwrap().iter().any(|s| s.instance == node.http),
        "the untraced node exported spans"
    );
}
