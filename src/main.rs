//! The `vinzclortho` binary: parse the command line (`cli`) and run a node,
//! or one of the tools (`dev-cluster`, `bench`).

use std::process::ExitCode;

use clap::Parser;
use vinzclortho::cli::{Cli, Command};
use vinzclortho::{node, telemetry};

// mimalloc instead of glibc's malloc: the request path allocates many small,
// short-lived buffers on several threads, where glibc spent ~11 % of a node's
// CPU (docs/performance.md, tuning log).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // The one-shot tools keep the default SIGINT/SIGTERM (Ctrl-C ends them
    // at once); only what runs until told to stop takes the signals over.
    let command = match cli.command {
        Some(Command::Admin(args)) => return vinzclortho::admin_cli::main(args).await,
        Some(Command::Certs(args)) => return vinzclortho::certs::main(args),
        other => other,
    };
    let shutdown = shutdown_signal();
    let args = match command {
        Some(Command::Serve(args)) => *args,
        Some(Command::DevCluster(args)) => {
            telemetry::init_logging(telemetry::LogFormat::Text);
            return match vinzclortho::devcluster::run(args, shutdown).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vinzclortho dev-cluster: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Bench(args)) => return vinzclortho::bench::main(*args, shutdown).await,
        Some(Command::Admin(_) | Command::Certs(_)) => unreachable!("the one-shot tools returned above"),
        None => cli.node,
    };
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vinzclortho: {e}");
            return ExitCode::from(2);
        }
    };
    // Bind first: with port 0 the address traces name is only known now.
    let listeners = match node::bind(&config).await {
        Ok(listeners) => listeners,
        Err(e) => {
            eprintln!("vinzclortho: {e}");
            return ExitCode::FAILURE;
        }
    };
    let instance = listeners.http_address(&config);
    let telemetry = match telemetry::init(config.log_format, config.otlp_endpoint.as_deref(), &instance) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("vinzclortho: {e}");
            return ExitCode::from(2);
        }
    };
    let result = node::run(config, listeners, shutdown);
    let result = result.await;
    // Flush spans still buffered; the exporter blocks on the runtime.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "node failed");
            eprintln!("vinzclortho: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM: stop accepting requests and let in-flight ones finish.
/// The handlers are installed now, not when the future is first polled: a
/// SIGTERM that arrives while the node is still starting must not kill it
/// with the default action.
fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        match (term, interrupt) {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            _ => std::future::pending::<()>().await,
        }
    }
}
