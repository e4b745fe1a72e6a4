//! `servicebus-emulator`: the thin binary over the library. Reads the config, starts the emulator,
//! prints config warnings (stderr) and then the official ready line (stdout), and serves until SIGINT or
//! SIGTERM.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use servicebus_emulator::amqp::EngineConfig;
use servicebus_emulator::config::Config;
use servicebus_emulator::{Emulator, READY_LINE, TlsIdentity};

/// A Service Bus compatible AMQP 1.0 broker for offline tests and the local lab.
///
/// Reads the official Service Bus emulator's Config.json, accepts its connection string
/// (Endpoint=sb://localhost;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=SAS_KEY_VALUE;UseDevelopmentEmulator=true;)
/// and prints "Emulator Service is Successfully Up!" on stdout when ready.
#[derive(Debug, Parser)]
#[command(name = "servicebus-emulator", version)]
// A certificate is for one TLS listener or both.
#[command(group = clap::ArgGroup::new("tls_listeners").args(["tls_listen", "https_listen"]).multiple(true))]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// The official emulator's Config.json; without it, the built-in lab default (queue `queue-messages`).
    #[arg(long, env = "SERVICEBUS_EMULATOR_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,

    /// AMQP listen address (use port 0 for a free port).
    #[arg(
        long,
        env = "SERVICEBUS_EMULATOR_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:5672"
    )]
    listen: SocketAddr,

    /// HTTP address for GET /health, the JSON counts and the administration API.
    #[arg(
        long,
        env = "SERVICEBUS_EMULATOR_HEALTH_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:5300"
    )]
    health_listen: SocketAddr,

    /// Also serve AMQP over TLS here, as Azure does on 5671 (needs --tls-cert and --tls-key).
    #[arg(
        long,
        env = "SERVICEBUS_EMULATOR_TLS_LISTEN",
        value_name = "ADDR",
        requires_all = ["tls_cert", "tls_key"]
    )]
    tls_listen: Option<SocketAddr>,

    /// Also serve the HTTP listener (health, counts, administration API) over HTTPS here, with
    /// --tls-cert and --tls-key: the SDKs' admin clients call https://{namespace}:443 whatever the
    /// connection string's port. The container image sets 0.0.0.0:443, used once a certificate is given.
    #[arg(long, env = "SERVICEBUS_EMULATOR_HTTPS_LISTEN", value_name = "ADDR")]
    https_listen: Option<SocketAddr>,

    /// PEM certificate chain for --tls-listen and --https-listen, server certificate first; clients
    /// must trust its CA.
    #[arg(
        long,
        env = "SERVICEBUS_EMULATOR_TLS_CERT",
        value_name = "FILE",
        requires_all = ["tls_key", "tls_listeners"]
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SERVICEBUS_EMULATOR_TLS_KEY",
        value_name = "FILE",
        requires_all = ["tls_cert", "tls_listeners"]
    )]
    tls_key: Option<PathBuf>,

    /// The HTTP port alone (the official emulator's variable); replaces the port of --health-listen.
    #[arg(long, env = "EMULATOR_HTTP_PORT", value_name = "PORT")]
    http_port: Option<u16>,

    /// Keep messages, run-time entities and session state here (a directory; created if missing), so
    /// a restart or a crash loses nothing acknowledged. Without it the emulator is in memory only.
    #[arg(long, env = "SERVICEBUS_EMULATOR_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Log format on stderr (filter with RUST_LOG, default `info`).
    #[arg(long, env = "SERVICEBUS_EMULATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(flatten)]
    limits: Limits,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the entities of a running emulator with their message counts (through its
    /// administration API on the HTTP port).
    Entities {
        /// The running emulator's HTTP address.
        #[arg(
            long,
            env = "SERVICEBUS_EMULATOR_URL",
            default_value = "http://127.0.0.1:5300"
        )]
        url: String,
        /// SAS key name and key the requests are signed with (the connection string's).
        #[arg(long, default_value = servicebus_emulator::auth::EMULATOR_RULE)]
        key_name: String,
        #[arg(long, default_value = servicebus_emulator::auth::EMULATOR_KEY)]
        key: String,
        /// Print JSON (an array of entities) instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

/// What protects the process from clients that take too much; each refusal names its flag.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Limits")]
struct Limits {
    /// Connections served at once over all listeners; one more is closed at once (Service Bus
    /// Standard's AMQP connection quota).
    #[arg(long, env = "SERVICEBUS_EMULATOR_MAX_CONNECTIONS", value_name = "N",
          default_value_t = EngineConfig::default().max_connections)]
    max_connections: usize,

    /// Links one connection may have attached at once; one more is refused with
    /// amqp:resource-limit-exceeded.
    #[arg(long, env = "SERVICEBUS_EMULATOR_MAX_LINKS_PER_CONNECTION", value_name = "N",
          default_value_t = EngineConfig::default().max_links_per_connection)]
    max_links_per_connection: usize,

    /// Largest AMQP frame accepted, advertised in Open (at least 512).
    #[arg(long, env = "SERVICEBUS_EMULATOR_MAX_FRAME_SIZE", value_name = "BYTES",
          default_value_t = EngineConfig::default().max_frame_size,
          value_parser = clap::value_parser!(u32).range(512..))]
    max_frame_size: u32,

    /// Largest message a client may send (Standard: 256 KiB; Premium allows up to 100 MiB).
    #[arg(long, env = "SERVICEBUS_EMULATOR_MAX_MESSAGE_SIZE", value_name = "BYTES",
          default_value_t = EngineConfig::default().max_message_size)]
    max_message_size: u64,

    /// Idle time-out advertised in Open, in seconds; a connection silent for twice this is closed.
    #[arg(long, env = "SERVICEBUS_EMULATOR_IDLE_TIMEOUT", value_name = "SECONDS",
          default_value_t = EngineConfig::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
}

impl Limits {
    fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            max_connections: self.max_connections,
            max_links_per_connection: self.max_links_per_connection,
            max_frame_size: self.max_frame_size,
            max_message_size: self.max_message_size,
            idle_timeout: std::time::Duration::from_secs(self.idle_timeout),
            ..EngineConfig::default()
        }
    }
}

fn main() -> ExitCode {
    let mut cli = parse();
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command.take() {
        Some(Command::Entities {
            url,
            key_name,
            key,
            json,
        }) => runtime.block_on(entities(&url, &key_name, &key, json)),
        None => runtime.block_on(run(cli)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// The command line, with the one rule clap cannot say: `--https-listen` needs a certificate when a
/// person asks for it, while the container image's default (`SERVICEBUS_EMULATOR_HTTPS_LISTEN`)
/// waits quietly for one, so the image still starts without TLS.
fn parse() -> Cli {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if cli.https_listen.is_some() && cli.tls_cert.is_none() {
        if matches.value_source("https_listen") == Some(clap::parser::ValueSource::EnvVariable) {
            cli.https_listen = None;
        } else {
            Cli::command()
                .error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--https-listen needs --tls-cert <FILE> and --tls-key <FILE>: the certificate \
                     HTTPS clients check (its names must include the host they call)",
                )
                .exit();
        }
    }
    cli
}

/// The error and its causes, skipping causes the message already quotes (the library's errors name
/// their source in their own text).
fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal; container logs and test captures get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// `servicebus-emulator entities`: one line per entity with its counts.
async fn entities(url: &str, key_name: &str, key: &str, json: bool) -> anyhow::Result<()> {
    let rows = servicebus_emulator::admin::client::AdminClient::new(url, key_name, key)
        .list()
        .await?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|r| r.path.chars().count())
        .chain([4])
        .max()
        .unwrap_or(4);
    writeln!(
        out,
        "{:<12}  {:<width$}  {:>8}  {:>11}  {:>9}",
        "KIND", "NAME", "ACTIVE", "DEAD-LETTER", "SCHEDULED"
    )?;
    for r in &rows {
        writeln!(
            out,
            "{:<12}  {:<width$}  {:>8}  {:>11}  {:>9}",
            r.kind,
            r.path,
            r.active_message_count,
            r.dead_letter_message_count,
            r.scheduled_message_count
        )?;
    }
    if rows.is_empty() {
        writeln!(
            out,
            "(no entities; create some with the administration API or Config.json)"
        )?;
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => Config::lab_default(),
    };
    let stop = shutdown_signal().context("cannot install the SIGINT/SIGTERM handlers")?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}");
    }
    let mut builder = Emulator::builder()
        .config(config)
        .listen(cli.listen)
        .health_listen(http_listen(&cli))
        .engine_config(cli.limits.engine_config());
    // clap makes the certificate, its key and a TLS listener come together.
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        let identity = TlsIdentity::from_pem_files(cert, key)?;
        if let Some(addr) = cli.tls_listen {
            builder = builder.tls(addr, identity.clone());
        }
        if let Some(addr) = cli.https_listen {
            builder = builder.https(addr, identity);
        }
    }
    if let Some(dir) = &cli.data_dir {
        builder = builder.data_dir(dir);
    }
    let emulator = builder.start().await?;
    tracing::info!(
        amqp = %emulator.amqp_addr(),
        amqps = emulator.tls_addr().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        health = %emulator.health_addr(),
        https = emulator.https_addr().map(|a| a.to_string()).unwrap_or_else(|| "off".into()),
        connection_string = %emulator.connection_string(),
        "ready"
    );
    // Wait strategies read stdout line by line; flush so the line is not stuck in a pipe buffer.
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{READY_LINE}")
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    drop(stdout);
    emulator.run_until(stop).await;
    tracing::info!("stopped");
    Ok(())
}

/// `--health-listen`, with its port replaced by `EMULATOR_HTTP_PORT`/`--http-port` when given.
fn http_listen(cli: &Cli) -> SocketAddr {
    let mut addr = cli.health_listen;
    if let Some(port) = cli.http_port {
        addr.set_port(port);
    }
    addr
}

/// SIGINT (Ctrl-C) or SIGTERM (container stop, test harness). The handlers are installed here, before
/// the ready line is printed: a signal sent right after the line must stop the process cleanly, not
/// kill it with the default action.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory as _;
        super::Cli::command().debug_assert();
    }
}
