//! `servicebus-job`: parse the configuration, drain the queue, map the result to an exit code.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};

use aca_job_lab::config::{Config, Flags};
use aca_job_lab::job::{self, exit_code};
use aca_job_lab::telemetry;
use clap::Parser as _;

/// The signal that stopped us, if any (0 = none).
static STOPPED_BY: AtomicU8 = AtomicU8::new(0);

fn main() -> ExitCode {
    // One TLS/crypto provider for the process (rustls for AMQP, reqwest for managed identity):
    // ring, chosen in Cargo.toml.
    aca_job_lab::servicebus::install_crypto_provider();

    let flags = Flags::parse();
    let config = match Config::from_sources(flags, |name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("configuration error: {error}");
            return ExitCode::from(exit_code::CONFIGURATION_ERROR);
        }
    };
    telemetry::init(config.log_format);

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "could not start the async runtime");
            return ExitCode::from(exit_code::RUNTIME_ERROR);
        }
    };
    let result = runtime.block_on(async {
        // Listen for signals before connecting, so a SIGTERM at any point is handled by us.
        let shutdown = shutdown_signal();
        job::execute(&config, &config.processor, shutdown).await
    });
    match result {
        Ok(summary) if summary.interrupted => {
            ExitCode::from(exit_code::SIGNAL_BASE + STOPPED_BY.load(Ordering::Relaxed))
        }
        Ok(summary) => ExitCode::from(summary.exit_code()),
        Err(error) => {
            tracing::error!(error = %error, "job failed");
            ExitCode::from(exit_code::RUNTIME_ERROR)
        }
    }
}

/// Registers for SIGTERM (Container Apps at replica timeout or stop) and SIGINT (Ctrl-C) now, and
/// returns a future that resolves on the first of them. Must be called inside the runtime.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = streams else {
            tracing::warn!("cannot listen for signals; the job will not stop early");
            return std::future::pending().await;
        };
        let signo = tokio::select! {
            _ = term.recv() => 15,
            _ = int.recv() => 2,
        };
        STOPPED_BY.store(signo, Ordering::Relaxed);
        tracing::warn!(
            signal = if signo == 15 { "SIGTERM" } else { "SIGINT" },
            "stopping: no new messages will be received"
        );
    }
}
