//! The `sockjs-gateway` command: run the gateway, check a config file, or print the
//! effective configuration.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use sockjs_gateway::Gateway;
use sockjs_gateway::auth::users::{HashScheme, hash_password_command};
use sockjs_gateway::config::types::parse_listen_addr;
use sockjs_gateway::config::{Config, Transport};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A SockJS server for every browser and network, with a STOMP broker behind it.
#[derive(Parser)]
#[command(name = "sockjs-gateway", version, about)]
struct Cli {
    /// TOML config file; without it an embedded default serves STOMP at /stomp (in-memory
    /// broker), /echo and the demo chat page at /demo on 127.0.0.1:8080.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// HTTP listen address, overriding `[server] listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr, global = true)]
    listen: Option<SocketAddr>,
    /// Serve STOMP over plain TCP on ADDR, overriding `[stomp] tcp_listen`.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr, global = true)]
    stomp_listen: Option<SocketAddr>,
    /// Serve STOMP over TLS on ADDR, overriding `[stomp] tls_listen` (needs `[server]
    /// tls_cert` and `tls_key`).
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr, global = true)]
    stomp_tls_listen: Option<SocketAddr>,
    /// Serve the admin listener (publish API, /metrics, health, dashboard) on ADDR,
    /// overriding `[admin] listen`; the embedded default uses 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR", value_parser = parse_listen_addr, global = true)]
    admin_listen: Option<SocketAddr>,
    /// How log lines are written to stderr: text for people, json (one object a line) for
    /// log shippers. The level comes from SOCKJS_GATEWAY_LOG (default: info).
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

/// The format of log lines.
#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and report every problem it has, each with its key and line.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
    /// Print the effective configuration as TOML: the file given with --config (or the
    /// embedded default) with every default written out and --listen / --stomp-listen
    /// applied. Secrets are redacted.
    PrintConfig,
    /// Hash a password for the `[auth] users_file`: read from the terminal without echo
    /// (asked twice), or the first line of standard input when piped; prints the hash, or a
    /// whole users-file line with --user.
    HashPassword {
        /// The hash scheme.
        #[arg(long, value_enum, default_value_t = Scheme::Argon2)]
        algorithm: Scheme,
        /// Print a users-file line `USER:HASH[:ROLES]` for this user.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Roles for the users-file line, comma-separated.
        #[arg(long, value_name = "ROLES", requires = "user")]
        roles: Option<String>,
    },
}

/// The hash schemes `hash-password` makes.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Scheme {
    /// argon2id, 19 MiB, 2 passes (OWASP's recommendation).
    Argon2,
    /// bcrypt, cost 12.
    Bcrypt,
}

/// Log to stderr in `format`, at the level SOCKJS_GATEWAY_LOG sets.
fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("SOCKJS_GATEWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    if let Some(Command::HashPassword {
        algorithm,
        user,
        roles,
    }) = &cli.command
    {
        let scheme = match algorithm {
            Scheme::Argon2 => HashScheme::Argon2,
            Scheme::Bcrypt => HashScheme::Bcrypt,
        };
        return match hash_password_command(scheme, user.as_deref(), roles.as_deref()) {
            Ok(line) => {
                use std::io::Write;
                match writeln!(std::io::stdout(), "{line}") {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(_) => ExitCode::FAILURE,
                }
            }
            Err(e) => {
                eprintln!("sockjs-gateway hash-password: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::CheckConfig { file }) = &cli.command {
        return match Config::from_file(file) {
            Ok(config) => {
                for warning in config.warnings() {
                    eprintln!("{}: warning: {warning}", file.display());
                }
                eprintln!(
                    "{}: ok ({} services)",
                    file.display(),
                    config.services.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        };
    }
    let mut config = match &cli.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("sockjs-gateway: {e}");
                return ExitCode::FAILURE;
            }
        },
        None => Config::embedded(),
    };
    if let Some(addr) = cli.listen {
        config.server.listen = addr;
    }
    if let Some(addr) = cli.stomp_listen {
        config.stomp.tcp_listen = Some(addr);
    }
    if let Some(addr) = cli.admin_listen {
        config.admin.listen = Some(addr);
    }
    if let Some(addr) = cli.stomp_tls_listen {
        config.stomp.tls_listen = Some(addr);
    }
    if (cli.admin_listen.is_some() || cli.stomp_tls_listen.is_some())
        && let Err(e) = config.validate()
    {
        eprintln!("sockjs-gateway: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(Command::PrintConfig) = &cli.command {
        return match config.to_toml() {
            Ok(text) => {
                let source = cli
                    .config
                    .as_ref()
                    .map_or("the embedded default".to_string(), |p| {
                        p.display().to_string()
                    });
                print!(
                    "# The effective configuration of {source}, every default written out.\n\
                     # Keys left out are unset: no limit, no value.\n\n{text}"
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sockjs-gateway: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockjs-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The embedded default's admin listener is a convenience: if its port is taken, the
    // gateway still starts (and says so); one asked for by a file or flag must start.
    let admin_required = cli.config.is_some() || cli.admin_listen.is_some();
    match runtime.block_on(run(config, admin_required)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockjs-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config, admin_required: bool) -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Gateway::from_config(&config)?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr()?;
    if let Some(addr) = config.stomp.tcp_listen {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for STOMP over TCP on {addr}: {e}"))?;
        tracing::info!(
            app = "stomp",
            "STOMP over TCP listening on {}",
            tcp.local_addr()?
        );
        gateway.spawn_stomp_tcp(tcp);
    }
    if let Some(addr) = config.stomp.tls_listen {
        let tls = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for STOMP over TLS on {addr}: {e}"))?;
        let local = tls.local_addr()?;
        if gateway.spawn_stomp_tls(tls).is_some() {
            tracing::info!(app = "stomp", "STOMP over TLS listening on {local}");
        }
    }
    let (http, ws) = match gateway.is_tls() {
        true => ("https", "wss"),
        false => ("http", "ws"),
    };
    for service in &config.services {
        let transports: Vec<&str> = service
            .enabled_transports()
            .iter()
            .map(|t| t.name())
            .collect();
        let raw = match service.enabled(Transport::WebsocketRaw) {
            true => format!("{ws}://{addr}{}/websocket", service.prefix),
            false => "off".to_string(),
        };
        tracing::info!(
            app = %service.app,
            transports = %transports.join(","),
            raw_websocket = %raw,
            "service {http}://{addr}{}",
            service.prefix
        );
    }
    if let Some(demo) = gateway.demo() {
        match demo.assets_dir() {
            Ok(dir) => tracing::info!(
                service = demo.service(),
                libraries = %dir.display(),
                "demo page {http}://{addr}{}",
                demo.path()
            ),
            Err(searched) => {
                let searched: Vec<String> =
                    searched.iter().map(|d| d.display().to_string()).collect();
                tracing::warn!(
                    searched = %searched.join(", "),
                    "demo page {http}://{addr}{} cannot connect: sockjs-client and @stomp/stompjs \
                     are not installed; run `{}` in the source tree and restart",
                    demo.path(),
                    sockjs_gateway::demo::INSTALL_COMMAND
                );
            }
        }
    }
    tracing::info!(
        drain_timeout_s = config.server.drain_timeout.as_secs_f64(),
        "SIGTERM or SIGINT drains the sessions; a second one exits at once"
    );
    // True from the first SIGTERM or SIGINT on: the gateway drains (and readiness fails).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(admin_addr) = config.admin.listen {
        match TcpListener::bind(admin_addr).await {
            Ok(admin) => {
                // Worded so the main listener's line below stays the only "listening on".
                tracing::info!("admin listener at http://{}", admin.local_addr()?);
                gateway.spawn_admin(admin, stop_rx.clone())?;
            }
            Err(e) if !admin_required => tracing::warn!(
                "admin listener not started: cannot listen on {admin_addr}: {e} \
                 (use --admin-listen ADDR)"
            ),
            Err(e) => return Err(format!("cannot listen for admin on {admin_addr}: {e}").into()),
        }
    }
    // Logged last: test harnesses wait for this line before they connect.
    let prefixes: Vec<&str> = config.services.iter().map(|s| s.prefix.as_str()).collect();
    tracing::info!(services = ?prefixes, "listening on {http}://{addr}");
    gateway.stomp().spawn_stats_logger();
    let mut signals = Signals::new()?;
    tokio::spawn(async move {
        let first = signals.next().await;
        tracing::info!(signal = first, "shutting down: draining sessions");
        let _ = stop_tx.send(true);
        let second = signals.next().await;
        tracing::warn!(
            signal = second,
            "second signal: exiting without waiting for the drain"
        );
        std::process::exit(1);
    });
    gateway.serve(listener, stop_rx).await?;
    Ok(())
}

/// SIGTERM (systemd, Docker, Kubernetes) and SIGINT (Ctrl-C), which both start the drain.
struct Signals {
    /// SIGTERM deliveries.
    term: tokio::signal::unix::Signal,
    /// SIGINT deliveries.
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The name of the next signal that arrives.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
