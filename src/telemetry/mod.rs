//! Observability: logs and traces set up here, every metric in [`metrics`],
//! trace context across processes in [`propagation`].
//!
//! Logs go to stderr, human-readable by default or JSON, filtered by
//! RUST_LOG (default `info`). Traces are exported over OTLP/gRPC when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (the standard variable) or `--otlp-endpoint`
//! names a collector; without one no exporter exists and spans cost only
//! what `tracing` costs anyway.

pub mod metrics;
pub mod propagation;

use std::fmt;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// How log lines are written: `--log-format`. Defined here, with the
/// logging it selects; config parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Target of the per-call spans of internal gRPC (`grpc.client`, `grpc.server`).
/// They exist for traces: without an OTLP exporter they are switched off, and
/// the log output never formats them (four of the five spans a quorum request
/// makes; formatting them cost ~2 % of a node's CPU under load).
pub const RPC_SPANS: &str = "vinzclortho::rpc::spans";

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] flushes it.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes spans not yet exported. Blocks: call from a blocking context.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("vinzclortho: trace exporter shutdown: {e}");
        }
    }
}

/// Sets up logging and, when a collector is named, trace export. Must run
/// inside the tokio runtime (the exporter uses its reactor). `instance`
/// names this process in the traces (its HTTP address).
pub fn init(format: LogFormat, otlp_endpoint: Option<&str>, instance: &str) -> Result<Telemetry, String> {
    let endpoint = otlp_endpoint
        .map(str::to_owned)
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty());
    let provider = match endpoint {
        Some(endpoint) => Some(tracer_provider(&endpoint, instance)?),
        None => None,
    };
    install(format, provider.as_ref());
    Ok(Telemetry { provider })
}

/// Logging only (subcommands that run no node): never exports traces.
pub fn init_logging(format: LogFormat) {
    install(format, None);
}

/// The global subscriber: filter, formatter, and the trace layer if any.
fn install(format: LogFormat, provider: Option<&SdkTracerProvider>) {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    propagation::set_exporting(provider.is_some());
    if provider.is_none() {
        filter = filter.add_directive(format!("{RPC_SPANS}=off").parse().expect("a valid directive"));
    }
    // Colours only on a terminal: escape codes in log files help nobody.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let fmt = match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().boxed(),
    };
    let otel = provider.map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("vinzclortho")));
    // A second init (several nodes in one test process) keeps the first.
    let fmt = fmt.with_filter(filter_fn(|meta| !(meta.is_span() && meta.target() == RPC_SPANS)));
    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
}

fn tracer_provider(endpoint: &str, instance: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter for {endpoint}: {e}"))?;
    let exporter = OnRuntime { inner: exporter, runtime: tokio::runtime::Handle::current() };
    let mut resource = Resource::builder().with_attribute(KeyValue::new("service.instance.id", instance.to_owned()));
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("vinzclortho");
    }
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource.build()).build())
}

/// The SDK's batch processor exports from its own OS thread, which has no
/// tokio reactor, while the OTLP exporter talks gRPC through tonic, which
/// needs one: run each export on the node's runtime.
struct OnRuntime<E> {
    inner: E,
    runtime: tokio::runtime::Handle,
}

impl<E> fmt::Debug for OnRuntime<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OnRuntime")
    }
}

impl<E: SpanExporter> SpanExporter for OnRuntime<E> {
    fn export(&self, batch: Vec<SpanData>) -> impl Future<Output = OTelSdkResult> + Send {
        let result = match tokio::runtime::Handle::try_current() {
            // Already on a runtime thread (not the batch thread): cannot
            // block here, and the batch thread is the only caller anyway.
            Ok(_) => {
                Err(opentelemetry_sdk::error::OTelSdkError::InternalFailure("export called on a runtime thread".into()))
            }
            Err(_) => self.runtime.block_on(self.inner.export(batch)),
        };
        std::future::ready(result)
    }

    fn shutdown_with_timeout(&self, timeout: std::time::Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}
