//! The `sockjs-gateway` command: run the gateway, or check a config file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sockjs_gateway::Gateway;
use sockjs_gateway::auth::users::{HashScheme, hash_password_command};
use sockjs_gateway::config::Config;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// A SockJS server for every browser and network, with a STOMP broker behind it.
#[derive(Parser)]
#[command(name = "sockjs-gateway", version, about)]
struct Cli {
    /// TOML config file; without it an embedded default serves STOMP at /stomp (in-memory
    /// broker) and /echo on 127.0.0.1:8080.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP listen address, overriding `[server] listen` (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// Serve STOMP over plain TCP on ADDR, overriding `[stomp] tcp_listen`.
    #[arg(long, value_name = "ADDR")]
    stomp_listen: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a config file and report the first problem, naming the key.
    CheckConfig {
        /// The config file to check.
        file: PathBuf,
    },
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("SOCKJS_GATEWAY_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
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
    if let Some(addr) = cli.listen {
        config.server.listen = addr;
    }
    if let Some(addr) = cli.stomp_listen {
        config.stomp.tcp_listen = Some(addr);
    }
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sockjs-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> Result<(), Box<dyn std::error::Error>> {
    let gateway = Gateway::from_config(&config)?;
    let listener = TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.server.listen))?;
    let addr = listener.local_addr()?;
    if let Some(addr) = config.stomp.tcp_listen {
        let tcp = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for STOMP over TCP on {addr}: {e}"))?;
        tracing::info!("STOMP over TCP listening on {}", tcp.local_addr()?);
        gateway.spawn_stomp_tcp(tcp);
    }
    // Logged last: test harnesses wait for this line before they connect.
    let prefixes: Vec<&str> = config.services.iter().map(|s| s.prefix.as_str()).collect();
    tracing::info!(services = ?prefixes, "listening on http://{addr}");
    gateway.stomp().spawn_stats_logger();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    gateway.serve(listener, stop_rx).await?;
    Ok(())
}
