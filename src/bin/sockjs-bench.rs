//! `sockjs-bench`: the load generator of the benchmark harness (see BENCHMARKS.md and
//! `scripts/bench`). It drives many SockJS sessions over websocket, raw websocket,
//! xhr-streaming, xhr-polling and eventsource, optionally speaking STOMP over them, and
//! reads the server's CPU time and RSS from `/proc/PID`. Loopback targets only.
//!
//! Scenarios print one JSON object on stdout; progress goes to stderr.

#[path = "sockjs_bench/app_backend.rs"]
mod app_backend;
#[path = "sockjs_bench/ceiling.rs"]
mod ceiling;
#[path = "sockjs_bench/client.rs"]
mod client;
#[path = "sockjs_bench/contention.rs"]
mod contention;
#[path = "sockjs_bench/echo.rs"]
mod echo;
#[path = "sockjs_bench/scenarios.rs"]
mod scenarios;
#[path = "sockjs_bench/stats.rs"]
mod stats;
#[path = "sockjs_bench/stomp.rs"]
mod stomp;
#[path = "sockjs_bench/wire.rs"]
mod wire;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use client::Transport;
use scenarios::{Common, FanoutOpts, StompOpts};

#[derive(Parser)]
#[command(
    name = "sockjs-bench",
    about = "Load generator for SockJS / STOMP servers (loopback only)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hold C idle sessions; report server RSS per session and time to establish.
    Idle {
        #[command(flatten)]
        common: CommonArgs,
        /// Seconds to hold the sessions after the last one opened, before sampling RSS.
        #[arg(long, default_value_t = 3.0)]
        hold: f64,
    },
    /// C sessions in a closed loop (send, wait for the echo); msgs/s and latency.
    Echo {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        timing: Timing,
    },
    /// C subscribers of a broadcast service, one publisher; delivered msgs/s, latency, loss.
    Fanout {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        timing: Timing,
        #[command(flatten)]
        fan: FanArgs,
    },
    /// C STOMP subscribers of one destination, one STOMP publisher.
    StompFanout {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        timing: Timing,
        #[command(flatten)]
        fan: FanArgs,
    },
    /// One STOMP publisher fans out to C subscribers of --destination at --rate publishes/s
    /// while a probe SUBSCRIBEs, SENDs, ACKs and UNSUBSCRIBEs on a destination of its own;
    /// the probe's round trips (p50/p99 per operation) show what waits behind the fan-out.
    Contention {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        timing: Timing,
        /// Publishes per second to the crowded destination.
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
    },
    /// A trivial tokio-tungstenite broadcaster: the ceiling for WebSocket fan-out.
    CeilingServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// A trivial tokio-tungstenite echo server: the upstream of the proxy scenarios.
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
    },
    /// C STOMP clients in a closed loop through an `/app` backend: SEND {destination}-i
    /// (pass --destination /app/bench), wait for the answer on /topic/bench-i; round trips/s
    /// and latency (--destination /topic/bench: the same loop through the broker alone).
    AppRoundtrip {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        timing: Timing,
    },
    /// A fast HTTP application backend for app-roundtrip (and for wrk against it directly).
    AppBackend {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Write the first request body here (wrk replays it).
        #[arg(long)]
        sample: Option<std::path::PathBuf>,
    },
}

#[derive(Args, Clone)]
struct CommonArgs {
    /// `http://127.0.0.1:PORT/prefix` (SockJS service) or `ws://127.0.0.1:PORT/path`.
    /// Repeat it to spread sessions over several servers (session i goes to url i mod N;
    /// the publisher to the first), e.g. the nodes of a cluster.
    #[arg(long, required = true)]
    url: Vec<String>,
    #[arg(long, value_enum, default_value_t = Transport::Websocket)]
    transport: Transport,
    /// Sessions (idle, echo) or subscribers (fanout).
    #[arg(short = 'c', long, default_value_t = 100)]
    clients: usize,
    /// Server process id(s) to sample in /proc (repeatable; summed).
    #[arg(long)]
    pid: Vec<u32>,
    /// Loopback source addresses to spread client sockets over (0: automatic).
    #[arg(long, default_value_t = 0)]
    sources: usize,
    /// A name for the server under test, copied into the result.
    #[arg(long, default_value = "server")]
    label: String,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Hard bound on the whole run, in seconds.
    #[arg(long, default_value_t = 180)]
    max_seconds: u64,
    /// Speak STOMP over the sessions (implied by stomp-fanout).
    #[arg(long)]
    stomp: bool,
    /// STOMP `host` header (virtual host).
    #[arg(long, default_value = "/")]
    stomp_host: String,
    #[arg(long)]
    login: Option<String>,
    #[arg(long)]
    passcode: Option<String>,
    /// STOMP destination.
    #[arg(long, default_value = "/topic/bench")]
    destination: String,
    /// WebSocket subprotocol offered on STOMP connections.
    #[arg(long, default_value = "v12.stomp")]
    subprotocol: String,
}

#[derive(Args, Clone)]
struct Timing {
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
}

#[derive(Args, Clone)]
struct FanArgs {
    /// Messages per subscriber the publisher may have in flight (0: automatic).
    #[arg(long, default_value_t = 0)]
    window: u64,
    /// The publisher's transport (default: raw when subscribers use raw, else websocket).
    #[arg(long, value_enum)]
    publisher: Option<Transport>,
    /// Of the C subscribers, N subscribe and then stop reading (4 KiB SO_RCVBUF, 88 B MSS) until the
    /// run is over; msgs/s counts the others, and the result says whether the server closed
    /// the stalled ones (websocket and raw transports only).
    #[arg(long, default_value_t = 0)]
    stalled: usize,
}

impl CommonArgs {
    fn build(&self, stomp: bool) -> Result<Common, String> {
        if self.clients == 0 || self.clients > 100_000 {
            return Err("--clients must be 1..=100000".into());
        }
        if !(24..=65_536).contains(&self.size) {
            return Err("--size must be 24..=65536".into());
        }
        let eps = self
            .url
            .iter()
            .map(|u| wire::Endpoint::parse(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let stomp = (stomp || self.stomp).then(|| {
            Arc::new(StompOpts {
                host: self.stomp_host.clone(),
                login: self.login.clone(),
                passcode: self.passcode.clone(),
                destination: self.destination.clone(),
                subprotocol: Some(self.subprotocol.clone()),
            })
        });
        Ok(Common {
            eps,
            transport: self.transport,
            clients: self.clients,
            proc: stats::Proc::new(self.pid.clone()),
            sources: self.sources,
            label: self.label.clone(),
            size: self.size,
            stomp,
        })
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, 3600.0))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sockjs-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = stats::now_ns();
    let (common, max) = match &cli.command {
        Command::CeilingServer { listen } => {
            return match runtime.block_on(ceiling::run(*listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ceiling-server: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::EchoServer { listen } => {
            return match runtime.block_on(echo::run(*listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("echo-server: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::AppBackend { listen, sample } => {
            return match runtime.block_on(app_backend::run(*listen, sample.clone())) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("app-backend: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Idle { common, .. }
        | Command::Echo { common, .. }
        | Command::Fanout { common, .. } => (common.build(false), common.max_seconds),
        Command::StompFanout { common, .. }
        | Command::AppRoundtrip { common, .. }
        | Command::Contention { common, .. } => (common.build(true), common.max_seconds),
    };
    let common = match common {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sockjs-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let label = common.label.clone();
    let result = runtime.block_on(async move {
        let run = async {
            match &cli.command {
                Command::Idle { hold, .. } => scenarios::idle(common, secs(*hold)).await,
                Command::Echo { timing, .. } => {
                    scenarios::echo(common, secs(timing.warmup), secs(timing.duration)).await
                }
                Command::Fanout { timing, fan, .. } | Command::StompFanout { timing, fan, .. } => {
                    let publisher =
                        fan.publisher
                            .unwrap_or(if common.transport == Transport::Raw {
                                Transport::Raw
                            } else {
                                Transport::Websocket
                            });
                    if fan.stalled > 0 && !common.transport.is_ws() {
                        return serde_json::json!({
                            "label": common.label,
                            "error": "--stalled needs the websocket or raw transport"
                        });
                    }
                    if fan.stalled >= common.clients {
                        return serde_json::json!({
                            "label": common.label,
                            "error": "--stalled must be less than --clients"
                        });
                    }
                    let o = FanoutOpts {
                        warmup: secs(timing.warmup),
                        duration: secs(timing.duration),
                        window: fan.window,
                        publisher,
                        stalled: fan.stalled,
                    };
                    scenarios::fanout(common, o).await
                }
                Command::AppRoundtrip { timing, .. } => {
                    scenarios::app_roundtrip(common, secs(timing.warmup), secs(timing.duration))
                        .await
                }
                Command::Contention { timing, rate, .. } => {
                    let o = contention::ContentionOpts {
                        warmup: secs(timing.warmup),
                        duration: secs(timing.duration),
                        rate: *rate,
                    };
                    contention::contention(common, o).await
                }
                Command::CeilingServer { .. }
                | Command::EchoServer { .. }
                | Command::AppBackend { .. } => serde_json::Value::Null,
            }
        };
        tokio::time::timeout(Duration::from_secs(max), run).await
    });
    // Dropping the runtime would wait for thousands of sockets; exit directly.
    match result {
        Ok(v) => {
            println!("{v}");
            let failed = v.get("error").is_some()
                && v.get("msgs").is_none()
                && v.get("ok").map(|o| o == 0).unwrap_or(true);
            std::process::exit(if failed { 1 } else { 0 });
        }
        Err(_) => {
            println!(
                "{}",
                serde_json::json!({"label": label, "error": format!("run exceeded --max-seconds {max}")})
            );
            std::process::exit(1);
        }
    }
}
