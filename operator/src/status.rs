//! Status, derived purely from the observed children.
//!
//! The same children always give the same status, and a condition keeps its
//! `lastTransitionTime` while its status stays the same, so a resync that changes nothing
//! derives exactly the current status and writes nothing. (The status patch itself does not
//! trigger a reconcile: the controller only reacts to generation changes of a GroundSystem.)

use std::collections::HashMap;

use k8s_openapi::{
    api::{apps::v1::Deployment, core::v1::PersistentVolumeClaim},
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff::{RoundMode, Timestamp, TimestampRound, Unit},
};
use kube::ResourceExt;

use crate::{
    apply::{Change, Verb},
    build::{Role, Volume, role_spec},
    crd::{ComponentStatus, GroundSystem, GroundSystemStatus, VolumeStatus},
};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// Why the current spec is not rolled out; reported on all three conditions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutBlocked {
    /// `InvalidSpec` or `ApplyFailed`.
    pub reason: &'static str,
    /// Names the field or object, and the fix.
    pub message: String,
}

pub const INVALID_SPEC: &str = "InvalidSpec";
pub const APPLY_FAILED: &str = "ApplyFailed";

/// The children as the API server last returned them. A missing entry is a child that does not
/// exist (yet).
#[derive(Default)]
pub struct Observed {
    pub deployments: HashMap<Role, Deployment>,
    pub claims: HashMap<Volume, PersistentVolumeClaim>,
}

pub fn derive(
    gs: &GroundSystem,
    observed: &Observed,
    blocked: Option<&RolloutBlocked>,
    now: Timestamp,
) -> GroundSystemStatus {
    let generation = gs.metadata.generation;
    let component = |role| {
        let deployment = observed.deployments.get(&role);
        // A refused spec is not rolled out: the Deployment's own count is what it runs for.
        let desired = match blocked {
            None => desired_replicas(gs, role),
            Some(_) => deployment.and_then(|d| d.spec.replicas).unwrap_or(0),
        };
        component_status(desired, deployment)
    };
    let volume = |volume| volume_status(observed.claims.get(&volume));
    let mut status = GroundSystemStatus {
        observed_generation: generation,
        conditions: Vec::new(),
        vfep: component(Role::Frontend),
        ground_system: component(Role::Ground),
        simulator: component(Role::Simulator),
        recording: volume(Volume::Recording),
        config: volume(Volume::Config),
    };
    let previous = gs
        .status
        .as_ref()
        .map(|status| status.conditions.as_slice())
        .unwrap_or_default();
    status.conditions = conditions(gs, observed, &status, blocked)
        .into_iter()
        .map(|(type_, state)| state.into_condition(type_, generation, previous, now))
        .collect();
    status
}

/// The name of a GroundSystem's claim for `volume`.
fn claim_name(gs: &GroundSystem, volume: Volume) -> String {
    format!("{}-{}", gs.name_any(), volume.component())
}

/// Whether `change` created a claim that the status last showed as existing: somebody deleted
/// it behind the operator's back, and the data on it went too unless its volume was retained.
pub fn recreated_claim(gs: &GroundSystem, change: &Change) -> Option<Volume> {
    let status = gs.status.as_ref()?;
    if change.verb != Verb::Created
        || change.object.kind.as_deref() != Some("PersistentVolumeClaim")
    {
        return None;
    }
    Volume::ALL.into_iter().find(|&volume| {
        let shown = match volume {
            Volume::Recording => &status.recording,
            Volume::Config => &status.config,
        };
        shown.phase.is_some() && change.object.name.as_deref() == Some(&claim_name(gs, volume))
    })
}

/// Whether `desired` differs from what the GroundSystem already shows.
pub fn needs_update(gs: &GroundSystem, desired: &GroundSystemStatus) -> bool {
    gs.status.as_ref() != Some(desired)
}

/// The spec field naming a role, used in messages.
fn role_field(role: Role) -> &'static str {
    match role {
        Role::Frontend => "vfep",
        Role::Ground => "groundSystem",
        Role::Simulator => "simulator",
    }
}

fn component_status(desired: i32, deployment: Option<&Deployment>) -> ComponentStatus {
    let ready = deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    ComponentStatus {
        desired_replicas: desired,
        ready_replicas: ready,
        replicas: format!("{ready}/{desired}"),
    }
}

fn desired_replicas(gs: &GroundSystem, role: Role) -> i32 {
    role_spec(&gs.spec, role).map_or(0, |spec| spec.replicas)
}

fn volume_status(claim: Option<&PersistentVolumeClaim>) -> VolumeStatus {
    let status = claim.and_then(|c| c.status.as_ref());
    VolumeStatus {
        phase: status.and_then(|s| s.phase.clone()),
        capacity: status
            .and_then(|s| s.capacity.as_ref())
            .and_then(|capacity| capacity.get("storage"))
            .map(|quantity| quantity.0.clone()),
    }
}

/// Where a role's rollout stands.
enum Rollout {
    Complete,
    InProgress(String),
    Failed(String),
}

fn rollout(role: Role, deployment: Option<&Deployment>, desired: i32) -> Rollout {
    let field = role_field(role);
    let Some(deployment) = deployment else {
        return if desired == 0 {
            Rollout::Complete
        } else {
            Rollout::InProgress(format!("{field}: Deployment not created yet"))
        };
    };
    let status = deployment.status.clone().unwrap_or_default();
    let condition = |type_: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_.as_deref() == Some(type_))
    };
    if let Some(failure) =
        condition("ReplicaFailure").filter(|c| c.status.as_deref() == Some("True"))
    {
        let message = failure.message.as_deref().unwrap_or("replica failure");
        return Rollout::Failed(format!("{field}: {message}"));
    }
    if let Some(stalled) =
        condition("Progressing").filter(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"))
    {
        let message = stalled
            .message
            .as_deref()
            .unwrap_or("progress deadline exceeded");
        return Rollout::Failed(format!("{field}: {message}"));
    }
    if status.observed_generation < deployment.metadata.generation {
        return Rollout::InProgress(format!("{field}: rollout not observed yet"));
    }
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    if updated < desired || ready < desired || total > desired {
        Rollout::InProgress(format!(
            "{field}: {ready}/{desired} ready, {updated} updated, {total} total"
        ))
    } else {
        Rollout::Complete
    }
}

/// A condition's value before timestamps and generation are attached.
struct ConditionState {
    status: bool,
    reason: &'static str,
    message: String,
}

impl ConditionState {
    fn new(status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            reason,
            message: message.into(),
        }
    }

    fn into_condition(
        self,
        type_: &str,
        generation: Option<i64>,
        previous: &[Condition],
        now: Timestamp,
    ) -> Condition {
        let status = if self.status { "True" } else { "False" };
        let last_transition_time = previous
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            // The API server stores whole seconds; truncating here keeps a freshly derived
            // status equal to its stored copy.
            .unwrap_or_else(|| Time(whole_seconds(now)));
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: self.reason.to_owned(),
            message: self.message,
            observed_generation: generation,
            last_transition_time,
        }
    }
}

fn whole_seconds(time: Timestamp) -> Timestamp {
    let truncate = TimestampRound::new()
        .smallest(Unit::Second)
        .mode(RoundMode::Trunc);
    time.round(truncate).unwrap_or(time)
}

fn conditions(
    gs: &GroundSystem,
    observed: &Observed,
    components: &GroundSystemStatus,
    blocked: Option<&RolloutBlocked>,
) -> [(&'static str, ConditionState); 3] {
    if let Some(RolloutBlocked { reason, message }) = blocked {
        let progressing = if *reason == INVALID_SPEC {
            "the invalid spec is not rolled out; the children keep their last valid configuration"
        } else {
            "not every child could be applied; see the Degraded condition"
        };
        return [
            (READY, ConditionState::new(false, reason, message.as_str())),
            (PROGRESSING, ConditionState::new(false, reason, progressing)),
            (
                DEGRADED,
                ConditionState::new(true, reason, message.as_str()),
            ),
        ];
    }

    let mut in_progress = Vec::new();
    let mut failed = Vec::new();
    for role in Role::ALL {
        match rollout(
            role,
            observed.deployments.get(&role),
            desired_replicas(gs, role),
        ) {
            Rollout::Complete => {}
            Rollout::InProgress(message) => in_progress.push(message),
            Rollout::Failed(message) => failed.push(message),
        }
    }
    let mut lost_volumes = Vec::new();
    for volume in Volume::ALL {
        let Some(claim) = observed.claims.get(&volume) else {
            continue;
        };
        let name = claim_name(gs, volume);
        let field = volume.component();
        match claim.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Lost") => lost_volumes.push(format!(
                "{field}: PersistentVolumeClaim {name} lost its PersistentVolume"
            )),
            // The pods that mount it cannot start; say which claim holds them back and where
            // to look, since the Deployment only reports unready replicas.
            Some("Pending") => {
                let class = claim
                    .spec
                    .as_ref()
                    .and_then(|spec| spec.storage_class_name.as_deref())
                    .map_or_else(
                        || "no storage class and no default StorageClass".to_owned(),
                        |class| format!("storage class {class:?}"),
                    );
                let namespace = gs.namespace().unwrap_or_default();
                in_progress.push(format!(
                    "{field}: PersistentVolumeClaim {name} is Pending ({class}); \
                     `kubectl describe pvc {name} -n {namespace}` shows why"
                ));
            }
            _ => {}
        }
    }

    let degraded = if !failed.is_empty() {
        ConditionState::new(true, "RolloutFailed", failed.join("; "))
    } else if !lost_volumes.is_empty() {
        ConditionState::new(true, "VolumeLost", lost_volumes.join("; "))
    } else {
        ConditionState::new(false, "AsExpected", "")
    };
    let progressing = if !failed.is_empty() {
        ConditionState::new(
            false,
            "RolloutFailed",
            "the rollout stopped; see the Degraded condition",
        )
    } else if in_progress.is_empty() {
        ConditionState::new(
            false,
            "RolloutComplete",
            "every component runs the current spec",
        )
    } else {
        ConditionState::new(true, "RollingOut", in_progress.join("; "))
    };
    let ready = if degraded.status {
        ConditionState::new(false, degraded.reason, degraded.message.clone())
    } else if !in_progress.is_empty() {
        ConditionState::new(false, "ComponentsNotReady", in_progress.join("; "))
    } else {
        ConditionState::new(
            true,
            "AllComponentsReady",
            format!(
                "vfep {}, groundSystem {}, simulator {} ready",
                components.vfep.replicas,
                components.ground_system.replicas,
                components.simulator.replicas
            ),
        )
    };
    [
        (READY, ready),
        (PROGRESSING, progressing),
        (DEGRADED, degraded),
    ]
}

#[cfg(test)]
mod tests;
