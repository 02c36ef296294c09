//! Leader election: of operator replicas with `--leader-election` on one Lease, only the holder
//! reconciles. Killing it (SIGKILL) hands over once the Lease expires; stopping it (SIGTERM) releases
//! the Lease, so the standby takes over at once; a holder that loses the Lease stops and exits.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use serde_json::json;
use vgs_e2e::{LeaderElectionOptions, Operator, TestNamespace, eventually, wait_ready};

const LEASE: &str = "vgs-operator";
/// Short, so that a takeover after SIGKILL is quick; the operator scales its renew deadline (2 s) and
/// retry period (400 ms) with it.
const SHORT_LEASE_SECONDS: u64 = 3;
/// On top of the lease duration for a takeover: the standby's retry period and API round trips on a
/// busy machine.
const SLACK: Duration = Duration::from_secs(5);
const READY_TIMEOUT: Duration = Duration::from_secs(120);

async fn replica(ns: &TestNamespace, id: &str, lease_duration_seconds: u64) -> Result<Operator> {
    Operator::options(&ns.name)
        .leader_election(LeaderElectionOptions {
            lease_name: LEASE.to_owned(),
            lease_namespace: None,
            leader_id: id.to_owned(),
            lease_duration_seconds,
        })
        .start()
        .await
}

async fn lease_holder(ns: &TestNamespace) -> Result<Option<String>> {
    vgs_e2e::lease_holder(&ns.client, &ns.name, LEASE).await
}

async fn wait_for_leader(
    ns: &TestNamespace,
    replicas: &[&Operator],
    timeout: Duration,
) -> Result<usize> {
    vgs_e2e::wait_for_leader(&ns.client, (&ns.name, LEASE), replicas, timeout).await
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_standby_takes_over_when_it_is_killed() -> Result<()> {
    let ns = TestNamespace::create("leader-kill").await?;
    let a = replica(&ns, "replica-a", SHORT_LEASE_SECONDS).await?;
    let b = replica(&ns, "replica-b", SHORT_LEASE_SECONDS).await?;
    let index = wait_for_leader(&ns, &[&a, &b], Duration::from_secs(30)).await?;
    let (mut leader, standby) = if index == 0 { (a, b) } else { (b, a) };

    ns.apply_groundsystem("mission", json!({})).await?;
    wait_ready(&ns, "mission", READY_TIMEOUT)
        .await
        .with_context(|| leader.log_tail())?;
    ensure!(
        leader.metric_sum("vgs_operator_writes_total").await? > 0.0,
        "the leader wrote nothing\n{}",
        leader.log_tail()
    );
    for family in [
        "vgs_operator_writes_total",
        "vgs_operator_reconciliations_total",
    ] {
        let value = standby.metric_sum(family).await?;
        ensure!(
            value == 0.0,
            "{family} of the standby is {value}\n{}",
            standby.log_tail()
        );
    }

    leader.kill()?;
    let killed = Instant::now();
    // Made while no one leads: the next leader reconciles it.
    let changed = ns
        .apply_groundsystem("mission", json!({ "groundSystem": { "replicas": 2 } }))
        .await?;
    wait_for_leader(
        &ns,
        &[&standby],
        Duration::from_secs(SHORT_LEASE_SECONDS) + SLACK,
    )
    .await
    .with_context(|| standby.log_tail())?;
    let handover = killed.elapsed();
    eprintln!("handover after SIGKILL of the leader: {handover:?}");
    // The killed leader renewed at most one retry period (400 ms) before it died: a takeover much
    // earlier than the lease duration would mean the standby did not wait for the Lease to expire.
    ensure!(
        handover >= Duration::from_secs(SHORT_LEASE_SECONDS - 1),
        "the standby took over {handover:?} after the kill, before the {SHORT_LEASE_SECONDS} s Lease expired"
    );

    let gs = wait_ready(&ns, "mission", READY_TIMEOUT)
        .await
        .with_context(|| standby.log_tail())?;
    assert_eq!(gs.metadata.generation, changed.metadata.generation);
    ensure!(
        standby.metric_sum("vgs_operator_writes_total").await? > 0.0,
        "the new leader wrote nothing\n{}",
        standby.log_tail()
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() -> Result<()> {
    // The default lease duration: without the release a standby would wait about 15 s.
    const LEASE_SECONDS: u64 = 15;
    let ns = TestNamespace::create("leader-term").await?;
    let mut a = replica(&ns, "replica-a", LEASE_SECONDS).await?;
    wait_for_leader(&ns, &[&a], Duration::from_secs(30)).await?;
    // Started once `a` leads, so `b` is the standby; it is Ready all the same (`start` waits for it).
    let b = replica(&ns, "replica-b", LEASE_SECONDS).await?;
    wait_for_leader(&ns, &[&a, &b], Duration::from_secs(10)).await?;

    let stopping = Instant::now();
    let status = a.terminate(Duration::from_secs(10)).await?;
    ensure!(
        status.success(),
        "the leader exited with {status} on SIGTERM\n{}",
        a.log_tail()
    );
    let holder = lease_holder(&ns).await?;
    ensure!(
        holder.as_deref().is_none_or(|holder| holder == "replica-b"),
        "the Lease still names {holder:?} after the leader stopped\n{}",
        a.log_tail()
    );
    wait_for_leader(&ns, &[&b], Duration::from_secs(LEASE_SECONDS / 2))
        .await
        .with_context(|| b.log_tail())?;
    eprintln!(
        "handover after SIGTERM of the leader: {:?}",
        stopping.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn a_leader_that_loses_the_lease_stops_and_exits_with_an_error() -> Result<()> {
    let ns = TestNamespace::create("leader-lost").await?;
    let mut a = replica(&ns, "replica-a", SHORT_LEASE_SECONDS).await?;
    wait_for_leader(&ns, &[&a], Duration::from_secs(30)).await?;

    // Another holder appears in the Lease (as after a partition that outlasted the lease duration).
    let leases = ns.api::<Lease>();
    let mut lease = leases.get(LEASE).await?;
    let spec = lease.spec.as_mut().context("the Lease has no spec")?;
    spec.holder_identity = Some("intruder".to_owned());
    spec.renew_time = Some(MicroTime(Timestamp::now()));
    leases
        .replace(LEASE, &PostParams::default(), &lease)
        .await?;

    let status = eventually(
        "the former leader to exit",
        Duration::from_secs(SHORT_LEASE_SECONDS) + SLACK,
        || {
            let exited = a.try_exit_status();
            async move { exited }
        },
    )
    .await
    .with_context(|| a.log_tail())?;
    ensure!(
        !status.success(),
        "losing the Lease should fail the process, it exited with {status}\n{}",
        a.log_tail()
    );
    ensure!(
        std::fs::read_to_string(&a.log)?.contains("lost the Lease"),
        "no log line about the lost Lease\n{}",
        a.log_tail()
    );
    assert_eq!(lease_holder(&ns).await?.as_deref(), Some("intruder"));
    Ok(())
}
