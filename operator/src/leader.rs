//! Leader election with a `coordination.k8s.io` Lease, so that of several replicas only one reconciles.
//!
//! The protocol is client-go's (and so controller-runtime's). The holder renews the Lease every retry
//! period and gives up once it could not renew within the renew deadline, which is shorter than the
//! lease duration: it has stopped before a standby may take over. A standby takes the Lease when it is
//! free, or when it has seen no change to it for the lease duration, measured on its own clock, so
//! clock skew between replicas does not matter. Every write is an `update` carrying the
//! resourceVersion just read, so of two replicas racing for the Lease exactly one wins (the other gets
//! 409 Conflict). `get`, `create` (the first replica ever) and `update` are all it needs: exactly
//! what the chart grants.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::Timestamp,
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use tokio::time::{Instant, sleep, timeout, timeout_at};
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;

/// Which Lease, and who this replica is.
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// This replica's `holderIdentity`; unique among the replicas.
    pub identity: String,
    pub timing: LeaseTiming,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTiming {
    /// How long a standby waits, after the last change to the Lease it saw, before taking it.
    pub lease_duration: Duration,
    /// How long the holder keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// Between two attempts to take or renew the Lease.
    pub retry_period: Duration,
}

impl LeaseTiming {
    /// controller-runtime's defaults (15 s lease, 10 s renew deadline, 2 s retry period), scaled to
    /// `lease_duration`, so that a short lease in tests keeps the same proportions.
    pub fn for_lease_duration(lease_duration: Duration) -> Self {
        Self {
            lease_duration,
            renew_deadline: lease_duration * 2 / 3,
            retry_period: lease_duration * 2 / 15,
        }
    }
}

/// Why the holder stopped holding the Lease.
#[derive(Debug, thiserror::Error)]
pub enum LostLease {
    #[error("{0} holds the Lease now")]
    TakenBy(String),
    #[error("no renewal of the Lease succeeded within {0:?}")]
    NotRenewed(Duration),
}

/// The outcome of one attempt to take or renew the Lease.
enum Attempt {
    Holding,
    HeldBy(String),
}

pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
    metrics: Arc<Metrics>,
    observed: Observation,
    /// When the last successful attempt to take (in `acquire`) or renew (in `hold`) the Lease started.
    renewed_at: Instant,
}

impl LeaderElection {
    pub fn new(client: Client, config: LeaseConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            metrics,
            observed: Observation::default(),
            renewed_at: Instant::now(),
        }
    }

    /// Campaigns until this replica holds the Lease. Sets `ready` once the Lease could be read: a
    /// standby that reaches the API server is ready to take over.
    pub async fn acquire(&mut self, ready: &AtomicBool) {
        let mut standing_by_for = None;
        loop {
            let started = Instant::now();
            match timeout(
                self.config.timing.renew_deadline,
                self.try_acquire_or_renew(),
            )
            .await
            {
                Ok(Ok(Attempt::Holding)) => {
                    self.renewed_at = started;
                    ready.store(true, Ordering::Relaxed);
                    self.metrics.set_leader(true);
                    info!(lease = %self.lease(), identity = %self.config.identity, "acquired the Lease, reconciling");
                    return;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => {
                    ready.store(true, Ordering::Relaxed);
                    if standing_by_for.as_ref() != Some(&holder) {
                        info!(lease = %self.lease(), %holder, "standing by: another replica holds the Lease");
                        standing_by_for = Some(holder);
                    }
                }
                Ok(Err(error)) if is_conflict(&error) => {
                    debug!(%error, "another replica wrote the Lease first")
                }
                Ok(Err(error)) => {
                    warn!(lease = %self.lease(), %error, "could not read or take the Lease")
                }
                Err(_elapsed) => {
                    warn!(lease = %self.lease(), "reading or taking the Lease timed out")
                }
            }
            sleep(self.config.timing.retry_period).await;
        }
    }

    /// Renews the Lease every retry period until it is lost: another replica took it, or no renewal
    /// succeeded within the renew deadline (a standby may take over soon after, so stop first).
    pub async fn hold(&mut self) -> LostLease {
        let timing = self.config.timing;
        loop {
            sleep(timing.retry_period).await;
            let deadline = self.renewed_at + timing.renew_deadline;
            let started = Instant::now();
            match timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(Attempt::Holding)) => {
                    self.renewed_at = started;
                    continue;
                }
                Ok(Ok(Attempt::HeldBy(holder))) => return self.lost(LostLease::TakenBy(holder)),
                Ok(Err(error)) => warn!(lease = %self.lease(), %error, "could not renew the Lease"),
                Err(_elapsed) => {}
            }
            if Instant::now() >= deadline {
                return self.lost(LostLease::NotRenewed(timing.renew_deadline));
            }
        }
    }

    /// Gives the Lease up if this replica holds it, so that a standby takes over at its next attempt
    /// rather than after the lease duration. Call it only once reconciling has stopped.
    pub async fn release(&self) {
        match timeout(self.config.timing.renew_deadline, self.clear_holder()).await {
            Ok(Ok(true)) => info!(lease = %self.lease(), "released the Lease"),
            Ok(Ok(false)) => {}
            Ok(Err(error)) => {
                warn!(lease = %self.lease(), %error, "could not release the Lease; a standby takes over once it expires")
            }
            Err(_elapsed) => {
                warn!(lease = %self.lease(), "releasing the Lease timed out; a standby takes over once it expires")
            }
        }
        self.metrics.set_leader(false);
    }

    /// One attempt: reads the Lease and writes this replica's claim, unless another holder's claim
    /// is still valid.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let identity = &self.config.identity;
        let lease_duration = self.config.timing.lease_duration;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(claim(None, identity, lease_duration, Timestamp::now())),
            };
            let created = self.api.create(&PostParams::default(), &lease).await?;
            self.observed
                .record(created.spec.unwrap_or_default(), Instant::now());
            return Ok(Attempt::Holding);
        };
        let current = lease.spec.take().unwrap_or_default();
        self.observed.record(current.clone(), Instant::now());
        if let Some(holder) = self.observed.valid_holder(Instant::now(), lease_duration)
            && holder != identity
        {
            return Ok(Attempt::HeldBy(holder.to_owned()));
        }
        lease.spec = Some(claim(
            Some(&current),
            identity,
            lease_duration,
            Timestamp::now(),
        ));
        // An update (PUT) carries the resourceVersion read above: it fails with 409 Conflict if
        // another replica wrote the Lease in between.
        let written = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        self.observed
            .record(written.spec.unwrap_or_default(), Instant::now());
        Ok(Attempt::Holding)
    }

    /// Clears `holderIdentity` if it is this replica; whether it was.
    async fn clear_holder(&self) -> Result<bool, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(false);
        };
        let Some(spec) = lease
            .spec
            .as_mut()
            .filter(|spec| spec.holder_identity.as_ref() == Some(&self.config.identity))
        else {
            return Ok(false);
        };
        spec.holder_identity = None;
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(true)
    }

    fn lost(&self, reason: LostLease) -> LostLease {
        self.metrics.set_leader(false);
        error!(lease = %self.lease(), %reason, "lost the Lease, stopping the controller");
        reason
    }

    fn lease(&self) -> String {
        format!("{}/{}", self.config.namespace, self.config.name)
    }
}

/// The Lease as last read, and when it last changed on our clock. A holder's claim is valid for its
/// lease duration after the last change we saw: its `renewTime` is on the holder's clock.
#[derive(Default)]
struct Observation(Option<(LeaseSpec, Instant)>);

impl Observation {
    fn record(&mut self, spec: LeaseSpec, now: Instant) {
        if self.0.as_ref().is_none_or(|(seen, _)| *seen != spec) {
            self.0 = Some((spec, now));
        }
    }

    /// The holder, while its claim is valid at `now`; `default_duration` for a claim without one.
    fn valid_holder(&self, now: Instant, default_duration: Duration) -> Option<&str> {
        let (spec, changed_at) = self.0.as_ref()?;
        let duration = spec
            .lease_duration_seconds
            .and_then(|seconds| u64::try_from(seconds).ok())
            .map_or(default_duration, Duration::from_secs);
        let valid = now < *changed_at + duration;
        spec.holder_identity.as_deref().filter(|_| valid)
    }
}

/// The Lease spec with `identity` as holder, renewed `now`. Taking it over from another holder (or
/// none) starts a new term; `current` is `None` for a Lease that does not exist yet.
fn claim(
    current: Option<&LeaseSpec>,
    identity: &str,
    lease_duration: Duration,
    now: Timestamp,
) -> LeaseSpec {
    let current = current.cloned();
    let renewing = current
        .as_ref()
        .is_some_and(|spec| spec.holder_identity.as_deref() == Some(identity));
    let transitions = match &current {
        None => 0,
        Some(spec) if renewing => spec.lease_transitions.unwrap_or(0),
        Some(spec) => spec.lease_transitions.unwrap_or(0).saturating_add(1),
    };
    let current = current.unwrap_or_default();
    LeaseSpec {
        holder_identity: Some(identity.to_owned()),
        lease_duration_seconds: Some(i32::try_from(lease_duration.as_secs()).unwrap_or(i32::MAX)),
        acquire_time: if renewing {
            current.acquire_time.clone()
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..current
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "replica-a";
    const FIFTEEN: Duration = Duration::from_secs(15);

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + seconds).unwrap()
    }

    #[test]
    fn default_timing_is_controller_runtimes_and_scales() {
        assert_eq!(
            LeaseTiming::for_lease_duration(FIFTEEN),
            LeaseTiming {
                lease_duration: FIFTEEN,
                renew_deadline: Duration::from_secs(10),
                retry_period: Duration::from_secs(2),
            }
        );
        let short = LeaseTiming::for_lease_duration(Duration::from_secs(3));
        assert_eq!(short.renew_deadline, Duration::from_secs(2));
        assert_eq!(short.retry_period, Duration::from_millis(400));
    }

    #[test]
    fn a_claim_is_valid_for_its_duration_after_the_last_change_seen() {
        let start = Instant::now();
        let theirs = claim(None, "replica-b", Duration::from_secs(3), at(0));
        let mut observed = Observation::default();
        observed.record(theirs.clone(), start);
        let after = |seconds| start + Duration::from_secs(seconds);
        // Its own duration (3 s) counts, not ours.
        assert_eq!(observed.valid_holder(after(2), FIFTEEN), Some("replica-b"));
        // Reading the same claim again does not extend it ...
        observed.record(theirs.clone(), after(2));
        assert_eq!(observed.valid_holder(after(3), FIFTEEN), None);
        // ... a renewal does, however far its renewTime is from our clock.
        observed.record(
            claim(Some(&theirs), "replica-b", Duration::from_secs(3), at(-600)),
            after(3),
        );
        assert_eq!(observed.valid_holder(after(5), FIFTEEN), Some("replica-b"));
        assert_eq!(observed.valid_holder(after(6), FIFTEEN), None);
        // A released Lease has no holder.
        let released = LeaseSpec {
            holder_identity: None,
            ..theirs
        };
        observed.record(released, after(6));
        assert_eq!(observed.valid_holder(after(6), FIFTEEN), None);
        assert_eq!(Observation::default().valid_holder(start, FIFTEEN), None);
    }

    #[test]
    fn a_new_lease_starts_the_first_term() {
        let spec = claim(None, ME, FIFTEEN, at(0));
        assert_eq!(spec.holder_identity.as_deref(), Some(ME));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(spec.renew_time, Some(MicroTime(at(0))));
        assert_eq!(spec.lease_transitions, Some(0));
    }

    #[test]
    fn renewing_keeps_the_term() {
        let held = claim(None, ME, FIFTEEN, at(0));
        let renewed = claim(Some(&held), ME, FIFTEEN, at(2));
        assert_eq!(renewed.acquire_time, Some(MicroTime(at(0))));
        assert_eq!(renewed.renew_time, Some(MicroTime(at(2))));
        assert_eq!(renewed.lease_transitions, Some(0));
    }

    #[test]
    fn taking_over_starts_a_new_term_and_keeps_other_fields() {
        let theirs = LeaseSpec {
            preferred_holder: Some("replica-b".into()),
            ..claim(None, "replica-b", FIFTEEN, at(0))
        };
        let ours = claim(Some(&theirs), ME, FIFTEEN, at(20));
        assert_eq!(ours.holder_identity.as_deref(), Some(ME));
        assert_eq!(ours.acquire_time, Some(MicroTime(at(20))));
        assert_eq!(ours.lease_transitions, Some(1));
        assert_eq!(ours.preferred_holder.as_deref(), Some("replica-b"));

        let released = LeaseSpec {
            holder_identity: None,
            ..ours
        };
        let again = claim(Some(&released), ME, FIFTEEN, at(30));
        assert_eq!(again.acquire_time, Some(MicroTime(at(30))));
        assert_eq!(again.lease_transitions, Some(2));
    }
}
