//! The `vinzclortho` binary: parse the command line and run a node.

use std::process::ExitCode;

use clap::Parser;
use vinzclortho::config::{Cli, Command};
use vinzclortho::{node, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.node,
    };
    let config = match args.resolve() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("vinzclortho: {e}");
            return ExitCode::from(2);
        }
    };
    telemetry::init_logging(config.log_format);
    let result = async {
        let listener = node::bind(&config).await?;
        node::run(config, listener, shutdown_signal()).await
    };
    match result.await {
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
