//! The `vinzclortho` binary: parse the command line and run a node.

use std::process::ExitCode;

use clap::Parser;
use vinzclortho::config::{Cli, Command};
use vinzclortho::{node, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => *args,
        Some(Command::DevCluster(args)) => {
            telemetry::init_logging(vinzclortho::config::LogFormat::Text);
            return match vinzclortho::devcluster::run(args, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vinzclortho dev-cluster: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Some(Command::Bench(args)) => return vinzclortho::bench::main(args).await,
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
    let result = node::run(config, listeners, shutdown_signal());
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
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
