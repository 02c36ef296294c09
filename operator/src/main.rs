use std::{
    hash::{BuildHasher, RandomState},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use futures::{
    FutureExt,
    future::{BoxFuture, Shared},
};
use kube::{
    Client, Config,
    config::{KubeConfigOptions, Kubeconfig},
};
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use vgs_operator::{
    controller::{self, Settings},
    leader::{LeaderElection, LeaseConfig, LeaseTiming},
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
    #[arg(long, env = "VGS_NAMESPACE", value_parser = namespace_name)]
    namespace: Option<String>,

    /// Image for GroundSystems without spec.image.
    #[arg(long, env = "VGS_DEFAULT_IMAGE", default_value = DEFAULT_IMAGE, value_parser = image_reference)]
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

    /// Reconcile only while holding the Lease --lease-name, so that more than one replica can run:
    /// the others stand by to take over.
    #[arg(long, env = "VGS_LEADER_ELECTION")]
    leader_election: bool,

    /// Name of the Lease for leader election.
    #[arg(long, env = "VGS_LEASE_NAME", default_value = "vgs-operator", value_parser = object_name)]
    lease_name: String,

    /// Namespace of the Lease; when unset, the client's: in a cluster the pod's, else the kubeconfig
    /// context's, else `default`.
    #[arg(long, env = "VGS_LEASE_NAMESPACE", value_parser = namespace_name)]
    lease_namespace: Option<String>,

    /// This replica's identity in the Lease; when unset, the hostname and a random suffix.
    #[arg(long, env = "VGS_LEADER_ID")]
    leader_id: Option<String>,

    /// Seconds a standby waits for the Lease holder to renew before taking over; the holder's renew
    /// deadline (2/3) and the retry period (2/15) scale with it, as controller-runtime's 15/10/2 s.
    /// 2..3600.
    #[arg(
        long,
        env = "VGS_LEASE_DURATION_SECONDS",
        default_value_t = 15,
        value_parser = clap::value_parser!(u64).range(2..=3600)
    )]
    lease_duration_seconds: u64,
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
    let shutdown = shutdown_signal()?;
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

    let lease = args.leader_election.then(|| LeaseConfig {
        name: args.lease_name,
        namespace: non_empty(args.lease_namespace)
            .unwrap_or_else(|| client.default_namespace().to_owned()),
        identity: non_empty(args.leader_id).unwrap_or_else(default_leader_id),
        timing: LeaseTiming::for_lease_duration(Duration::from_secs(args.lease_duration_seconds)),
    });
    let settings = Settings {
        namespace: non_empty(args.namespace),
        default_image: args.default_image,
        resync_interval: Duration::from_secs(args.resync_interval),
    };
    let result = match lease {
        Some(lease) => {
            let election = LeaderElection::new(client.clone(), lease, metrics.clone());
            run_elected(election, client, settings, metrics, ready, shutdown).await
        }
        None => {
            metrics.set_leader(true);
            controller::run(client, settings, metrics, ready, shutdown)
                .await
                .context("running the controller")
        }
    };
    stop_http.send(()).ok();
    http.await.context("HTTP server task")??;
    result
}

/// Stands by until this replica holds the Lease, then runs the controller while renewing it. On
/// shutdown it stops the controller first and then releases the Lease, so that the next holder
/// never overlaps with a reconcile of ours. A lost Lease stops the controller at once (in-flight
/// reconciles are aborted) and fails the process: its restart stands by again with nothing left
/// over from its term.
async fn run_elected(
    mut election: LeaderElection,
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: Shared<BoxFuture<'static, ()>>,
) -> anyhow::Result<()> {
    tokio::select! {
        () = election.acquire(&ready) => {}
        () = shutdown.clone() => {
            // An attempt in flight may have taken the Lease just now.
            election.release().await;
            return Ok(());
        }
    }
    let controller = controller::run(client, settings, metrics, ready, shutdown);
    let lost = tokio::select! {
        result = controller => {
            election.release().await;
            return result.context("running the controller");
        }
        lost = election.hold() => lost,
    };
    Err(lost).context("lost the Lease: exiting, so that the restarted process stands by")
}

/// Completes on SIGTERM or Ctrl-C. The handlers are registered at once, so that a signal that
/// arrives before anyone awaits it (say, while a standby becomes the leader) is not lost.
fn shutdown_signal() -> anyhow::Result<Shared<BoxFuture<'static, ()>>> {
    let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("shutting down gracefully");
    }
    .boxed()
    .shared())
}

fn image_reference(value: &str) -> Result<String, String> {
    if vgs_operator::crd::is_image_reference(value) {
        Ok(value.to_owned())
    } else {
        Err(
            "not a container image reference such as ghcr.io/vgs-io/vfep:0.1.0 \
             (registry[:port]/repository[:tag][@digest], the repository in lowercase)"
                .to_owned(),
        )
    }
}

/// A namespace name, or empty for unset (as a chart passes an unset value).
fn namespace_name(value: &str) -> Result<String, String> {
    if value.is_empty() || vgs_operator::crd::is_dns_label(value) {
        Ok(value.to_owned())
    } else {
        Err("not a namespace name: lowercase letters, digits and '-', at most 63".to_owned())
    }
}

fn object_name(value: &str) -> Result<String, String> {
    if vgs_operator::crd::is_dns_subdomain(value) {
        Ok(value.to_owned())
    } else {
        Err("not an object name: lowercase letters, digits, '-' and '.', at most 253".to_owned())
    }
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

/// The hostname and a random suffix: two processes on one host (or pods with the host's network)
/// must never share an identity, or both would take themselves for the holder.
fn default_leader_id() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "vgs-operator".to_owned());
    // RandomState's keys are seeded from the OS's random source.
    let suffix = RandomState::new().hash_one(std::process::id());
    format!("{hostname}_{suffix:016x}")
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
    // Colours only for a terminal, not for a log file or a pipe.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
