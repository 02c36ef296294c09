use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use tracing_subscriber::EnvFilter;
use vgs_operator::{
    controller::{self, Settings},
    metrics::{self, HttpState, Metrics},
};

const DEFAULT_IMAGE: &str = concat!("ghcr.io/vgs-io/vfep:", env!("CARGO_PKG_VERSION"));

/// Kubernetes operator for GroundSystems (vgs.io/v1alpha1).
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags of `run`, the default command.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run(RunArgs),
    /// Print the GroundSystem CRD as YAML.
    Crd,
}

#[derive(Args)]
struct RunArgs {
    /// Kubeconfig file(s), separated like $PATH; in-cluster config when unset.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<String>,

    /// Watch only this namespace; all namespaces when unset.
    #[arg(long, env = "VGS_NAMESPACE")]
    namespace: Option<String>,

    /// Image for GroundSystems without spec.image.
    #[arg(long, env = "VGS_DEFAULT_IMAGE", default_value = DEFAULT_IMAGE)]
    default_image: String,

    /// Log format; the level comes from RUST_LOG (default info).
    #[arg(long, env = "VGS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "VGS_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// Seconds after which every GroundSystem is reconciled again.
    #[arg(
        long,
        env = "VGS_RESYNC_INTERVAL",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    resync_interval: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => {
            print!("{}", vgs_operator::crd_yaml());
            Ok(())
        }
        Some(Command::Run(args)) => run(args).await,
        None => run(cli.run).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    let client = Client::try_from(client_config(args.kubeconfig.as_deref()).await?)
        .context("creating the Kubernetes client")?;

    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| format!("binding --http-addr {}", args.http_addr))?;
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(metrics::serve(
        listener,
        HttpState {
            metrics: metrics.clone(),
            ready: ready.clone(),
        },
        async {
            http_stopped.await.ok();
        },
    ));

    let settings = Settings {
        namespace: args.namespace.filter(|namespace| !namespace.is_empty()),
        default_image: args.default_image,
        resync_interval: Duration::from_secs(args.resync_interval),
    };
    let result = controller::run(client, settings, metrics, ready).await;
    stop_http.send(()).ok();
    http.await.context("HTTP server task")??;
    result.context("running the controller")
}

async fn client_config(kubeconfig: Option<&str>) -> anyhow::Result<Config> {
    let Some(paths) = kubeconfig.filter(|paths| !paths.is_empty()) else {
        return Config::incluster().context("loading the in-cluster config (no --kubeconfig)");
    };
    let mut merged: Option<Kubeconfig> = None;
    for path in std::env::split_paths(paths) {
        let next = Kubeconfig::read_from(&path)
            .with_context(|| format!("reading kubeconfig {}", PathBuf::from(&path).display()))?;
        merged = Some(match merged {
            Some(merged) => merged.merge(next)?,
            None => next,
        });
    }
    let merged = merged.context("--kubeconfig names no file")?;
    Config::from_custom_kubeconfig(merged, &KubeConfigOptions::default())
        .await
        .context("loading the kubeconfig")
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
