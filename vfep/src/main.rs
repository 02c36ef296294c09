//! `vfep`: one binary, three roles (`frontend`, `ground`, `simulator`) and a benchmark.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use vfep::config::Config;
use vfep::roles;

#[derive(Parser)]
#[command(
    name = "vfep",
    version,
    about = "Virtual front-end processor for CCSDS space packets, with its ground system and a vehicle simulator"
)]
struct Cli {
    /// Log line format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "VFEP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    role: Role,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Role {
    /// The vFEP: TM/TC links to the vehicle, APID routing, recording and playback, REST
    /// (JSON/XML), packet stream and GEMS.
    Frontend(FrontendArgs),
    /// The ground system: live telemetry values and commanding through the frontend, REST and
    /// a web page.
    Ground(GroundArgs),
    /// The vehicle: housekeeping telemetry, command execution and acknowledgement, load bursts.
    Simulator(SimulatorArgs),
    /// Measures throughput and latency of simulator -> frontend -> subscriber on loopback.
    Bench(vfep::bench::BenchArgs),
}

#[derive(Args)]
struct Common {
    /// The workload config file (schema in docs/architecture.md).
    #[arg(long, env = "VFEP_CONFIG", default_value = "/etc/vgs/vfep.yaml")]
    config: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "VFEP_BIND", default_value = "0.0.0.0")]
    bind: IpAddr,
}

#[derive(Args)]
struct FrontendArgs {
    #[command(flatten)]
    common: Common,
    /// Overrides frontend.httpPort.
    #[arg(long, env = "VFEP_HTTP_PORT", value_parser = port())]
    http_port: Option<u16>,
    /// Overrides recording.dir.
    #[arg(long, env = "VFEP_RECORDING_DIR")]
    recording_dir: Option<PathBuf>,
    /// Overrides vehicle.host.
    #[arg(long, env = "VFEP_VEHICLE_HOST", value_parser = NonEmptyStringValueParser::new())]
    vehicle_host: Option<String>,
}

#[derive(Args)]
struct GroundArgs {
    #[command(flatten)]
    common: Common,
    /// Port of the REST API and web page.
    #[arg(long, env = "VFEP_HTTP_PORT", default_value_t = 8081, value_parser = port())]
    http_port: u16,
    /// Overrides frontend.host.
    #[arg(long, env = "VFEP_FRONTEND_HOST", value_parser = NonEmptyStringValueParser::new())]
    frontend_host: Option<String>,
}

#[derive(Args)]
struct SimulatorArgs {
    #[command(flatten)]
    common: Common,
    /// Port of /healthz, /readyz, /metrics and the vehicle state.
    #[arg(long, env = "VFEP_HTTP_PORT", default_value_t = 8082, value_parser = port())]
    http_port: u16,
}

/// Ports to listen on: 0 (any free port) is refused, as in the config file.
fn port() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Runtime::new().expect("start the async runtime");
    match runtime.block_on(run(cli.role)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("vfep: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(role: Role) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    roles::cancel_on_signals(shutdown.clone());
    match role {
        Role::Frontend(args) => {
            let mut config = Config::load(&args.common.config)?;
            if let Some(dir) = args.recording_dir {
                config.recording.dir = dir;
            }
            if let Some(host) = args.vehicle_host {
                config.vehicle.host = host;
            }
            if let Some(port) = args.http_port {
                config.frontend.http_port = port;
            }
            roles::frontend::run(config, args.common.bind, shutdown).await
        }
        Role::Ground(args) => {
            let mut config = Config::load(&args.common.config)?;
            if let Some(host) = args.frontend_host {
                config.frontend.host = host;
            }
            roles::ground::run(config, args.common.bind, args.http_port, shutdown).await
        }
        Role::Simulator(args) => {
            let config = Config::load(&args.common.config)?;
            roles::simulator::run(config, args.common.bind, args.http_port, shutdown).await
        }
        Role::Bench(args) => vfep::bench::run(args).await,
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
