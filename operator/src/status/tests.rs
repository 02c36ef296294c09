use k8s_openapi::{
    api::{
        apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus},
        core::v1::{ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus},
    },
    apimachinery::pkg::api::resource::Quantity,
};
use kube::api::ObjectMeta;

use super::*;
use crate::crd::GroundSystemSpec;

fn groundsystem(spec: GroundSystemSpec) -> GroundSystem {
    let mut gs = GroundSystem::new("demo", spec);
    gs.metadata.namespace = Some("mission".into());
    gs.metadata.generation = Some(3);
    gs
}

fn deployment(generation: i64, ready: i32, updated: i32, total: i32) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            generation: Some(generation),
            ..ObjectMeta::default()
        },
        spec: DeploymentSpec {
            replicas: Some(total),
            ..DeploymentSpec::default()
        },
        status: Some(DeploymentStatus {
            observed_generation: Some(generation),
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            replicas: Some(total),
            ..DeploymentStatus::default()
        }),
    }
}

fn claim(phase: &str) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        status: Some(PersistentVolumeClaimStatus {
            phase: Some(phase.into()),
            capacity: (phase == "Bound")
                .then(|| [("storage".to_owned(), Quantity("1Gi".into()))].into()),
            ..PersistentVolumeClaimStatus::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

fn all_ready() -> Observed {
    Observed {
        deployments: Role::ALL
            .into_iter()
            .map(|role| (role, deployment(1, 1, 1, 1)))
            .collect(),
        claims: Volume::ALL
            .into_iter()
            .map(|volume| (volume, claim("Bound")))
            .collect(),
    }
}

fn condition<'a>(status: &'a GroundSystemStatus, type_: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"))
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + seconds).unwrap()
}

#[test]
fn fresh_groundsystem_is_progressing_and_not_ready() {
    let gs = groundsystem(GroundSystemSpec::default());
    let status = derive(&gs, &Observed::default(), None, at(0));
    assert_eq!(condition(&status, READY).status, "False");
    assert_eq!(condition(&status, READY).reason, "ComponentsNotReady");
    assert_eq!(condition(&status, PROGRESSING).status, "True");
    assert!(
        condition(&status, PROGRESSING)
            .message
            .contains("vfep: Deployment not created yet")
    );
    assert_eq!(condition(&status, DEGRADED).status, "False");
    assert_eq!(status.vfep.replicas, "0/1");
    assert_eq!(status.observed_generation, Some(3));
    assert!(
        status
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(3))
    );
}

#[test]
fn all_components_ready_makes_ready_true() {
    let gs = groundsystem(GroundSystemSpec::default());
    let status = derive(&gs, &all_ready(), None, at(0));
    assert_eq!(condition(&status, READY).status, "True");
    assert_eq!(
        condition(&status, READY).message,
        "vfep 1/1, groundSystem 1/1, simulator 1/1 ready"
    );
    assert_eq!(condition(&status, PROGRESSING).status, "False");
    assert_eq!(condition(&status, DEGRADED).status, "False");
    assert_eq!(status.ground_system.replicas, "1/1");
    assert_eq!(status.recording.phase.as_deref(), Some("Bound"));
    assert_eq!(status.recording.capacity.as_deref(), Some("1Gi"));
}

#[test]
fn a_rollout_in_progress_is_not_ready() {
    let gs = groundsystem(GroundSystemSpec::default());
    let mut observed = all_ready();
    // The new ReplicaSet is up but the old pod still runs.
    observed
        .deployments
        .insert(Role::Ground, deployment(2, 1, 1, 2));
    let status = derive(&gs, &observed, None, at(0));
    assert_eq!(condition(&status, READY).status, "False");
    assert_eq!(
        condition(&status, PROGRESSING).message,
        "groundSystem: 1/1 ready, 1 updated, 2 total"
    );

    // The Deployment controller has not seen the new spec yet.
    let mut stale = deployment(2, 1, 1, 1);
    stale.metadata.generation = Some(3);
    observed.deployments.insert(Role::Ground, stale);
    let status = derive(&gs, &observed, None, at(0));
    assert_eq!(
        condition(&status, PROGRESSING).message,
        "groundSystem: rollout not observed yet"
    );
}

#[test]
fn disabled_simulator_counts_as_zero_of_zero() {
    let mut spec = GroundSystemSpec::default();
    spec.simulator.enabled = false;
    let gs = groundsystem(spec);
    let mut observed = all_ready();
    observed.deployments.remove(&Role::Simulator);
    let status = derive(&gs, &observed, None, at(0));
    assert_eq!(status.simulator.replicas, "0/0");
    assert_eq!(condition(&status, READY).status, "True");
}

#[test]
fn a_failed_rollout_is_degraded() {
    let gs = groundsystem(GroundSystemSpec::default());
    let mut observed = all_ready();
    let mut failing = deployment(1, 0, 1, 1);
    failing.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
        type_: Some("ReplicaFailure".into()),
        status: Some("True".into()),
        message: Some("pods \"demo-vfep-x\" is forbidden: exceeded quota".into()),
        ..DeploymentCondition::default()
    }]);
    observed.deployments.insert(Role::Frontend, failing);
    let status = derive(&gs, &observed, None, at(0));
    let degraded = condition(&status, DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "RolloutFailed")
    );
    assert!(
        degraded.message.starts_with("vfep: pods"),
        "{}",
        degraded.message
    );
    assert_eq!(condition(&status, READY).reason, "RolloutFailed");
    // Found by a user: Progressing said "RolloutComplete: every component runs the current
    // spec" beside the failed rollout.
    let progressing = condition(&status, PROGRESSING);
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "RolloutFailed")
    );
    assert_eq!(
        progressing.message,
        "the rollout stopped; see the Degraded condition"
    );
}

#[test]
fn a_lost_volume_is_degraded() {
    let gs = groundsystem(GroundSystemSpec::default());
    let mut observed = all_ready();
    observed.claims.insert(Volume::Recording, claim("Lost"));
    let status = derive(&gs, &observed, None, at(0));
    assert_eq!(condition(&status, DEGRADED).reason, "VolumeLost");
    assert_eq!(
        condition(&status, DEGRADED).message,
        "recording: PersistentVolumeClaim demo-recording lost its PersistentVolume"
    );
    assert_eq!(condition(&status, READY).status, "False");
}

#[test]
fn an_invalid_spec_is_degraded_with_its_message() {
    let gs = groundsystem(GroundSystemSpec::default());
    let invalid = RolloutBlocked {
        reason: INVALID_SPEC,
        message: "spec.channels[1].apids[0]: APID 100 already belongs to ...".into(),
    };
    let status = derive(&gs, &all_ready(), Some(&invalid), at(0));
    let degraded = condition(&status, DEGRADED);
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert_eq!(degraded.message, invalid.message);
    assert_eq!(condition(&status, READY).status, "False");
    assert_eq!(condition(&status, PROGRESSING).status, "False");
    // Replica counts still reflect the running children.
    assert_eq!(status.vfep.replicas, "1/1");
}

#[test]
fn a_refused_spec_does_not_change_the_desired_replicas() {
    let mut spec = GroundSystemSpec::default();
    spec.vfep.replicas = 3;
    let gs = groundsystem(spec);
    let invalid = RolloutBlocked {
        reason: INVALID_SPEC,
        message: "spec.channels[1].apids[0]: ...".into(),
    };
    let status = derive(&gs, &all_ready(), Some(&invalid), at(0));
    assert_eq!(
        status.vfep.replicas, "1/1",
        "the Deployment still asks for 1"
    );
    assert_eq!(status.vfep.desired_replicas, 1);

    let mut observed = all_ready();
    observed.deployments.remove(&Role::Simulator);
    let status = derive(&gs, &observed, Some(&invalid), at(0));
    assert_eq!(status.simulator.replicas, "0/0", "nothing was rolled out");

    let accepted = derive(&gs, &all_ready(), None, at(0));
    assert_eq!(
        accepted.vfep.replicas, "1/3",
        "an accepted spec rolls out 3"
    );
}

#[test]
fn transition_time_is_kept_until_the_status_flips() {
    let mut gs = groundsystem(GroundSystemSpec::default());
    let first = derive(&gs, &Observed::default(), None, at(0));
    gs.status = Some(first.clone());

    // Later, still not ready: same transition times, even though the message changed.
    let mut observed = all_ready();
    observed
        .deployments
        .insert(Role::Frontend, deployment(1, 0, 1, 1));
    let second = derive(&gs, &observed, None, at(60));
    assert_ne!(
        condition(&second, PROGRESSING).message,
        condition(&first, PROGRESSING).message
    );
    for type_ in [READY, PROGRESSING, DEGRADED] {
        assert_eq!(
            condition(&second, type_).last_transition_time,
            condition(&first, type_).last_transition_time
        );
    }
    gs.status = Some(second);

    // Ready flips: Ready and Progressing get the new time, Degraded keeps its own.
    let third = derive(&gs, &all_ready(), None, at(120));
    assert_eq!(condition(&third, READY).last_transition_time, Time(at(120)));
    assert_eq!(
        condition(&third, PROGRESSING).last_transition_time,
        Time(at(120))
    );
    assert_eq!(
        condition(&third, DEGRADED).last_transition_time,
        Time(at(0))
    );
}

#[test]
fn unchanged_children_need_no_status_write() {
    let mut gs = groundsystem(GroundSystemSpec::default());
    let status = derive(&gs, &all_ready(), None, at(0));
    assert!(needs_update(&gs, &status));

    // Store it the way the API server does (JSON, whole seconds) and derive again later.
    let stored: GroundSystemStatus =
        serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
    gs.status = Some(stored);
    let again = derive(&gs, &all_ready(), None, at(300));
    assert!(
        !needs_update(&gs, &again),
        "a resync must not write the status"
    );

    // A new generation is a change even when the children are the same.
    gs.metadata.generation = Some(4);
    let next = derive(&gs, &all_ready(), None, at(300));
    assert!(needs_update(&gs, &next));
}

#[test]
fn transition_times_are_whole_seconds() {
    let gs = groundsystem(GroundSystemSpec::default());
    let now = at(0)
        .checked_add(k8s_openapi::jiff::SignedDuration::from_millis(900))
        .unwrap();
    let status = derive(&gs, &Observed::default(), None, now);
    assert_eq!(condition(&status, READY).last_transition_time, Time(at(0)));
}

#[test]
fn a_failed_apply_blocks_the_rollout() {
    let gs = groundsystem(GroundSystemSpec::default());
    let failed = RolloutBlocked {
        reason: APPLY_FAILED,
        message: "vgs-operator could not apply Deployment demo-gs: field is immutable".into(),
    };
    let status = derive(&gs, &Observed::default(), Some(&failed), at(0));
    assert_eq!(condition(&status, DEGRADED).reason, "ApplyFailed");
    assert_eq!(condition(&status, DEGRADED).message, failed.message);
    assert_eq!(condition(&status, READY).status, "False");
    // Found by users: "blocked", while the children that could be applied did roll out; then
    // "the others follow the current spec", while a conflict had stopped every write.
    assert_eq!(
        condition(&status, PROGRESSING).message,
        "not every child could be applied; see the Degraded condition"
    );
}

#[test]
fn a_pending_volume_is_named_while_not_ready() {
    let gs = groundsystem(GroundSystemSpec::default());
    let mut observed = all_ready();
    let mut pending = claim("Pending");
    pending.spec = Some(PersistentVolumeClaimSpec {
        storage_class_name: Some("fast-ssd".into()),
        ..PersistentVolumeClaimSpec::default()
    });
    observed.claims.insert(Volume::Recording, pending);
    observed.claims.insert(Volume::Config, claim("Pending"));
    let status = derive(&gs, &observed, None, at(0));
    let ready = condition(&status, READY);
    assert_eq!(ready.status, "False");
    assert_eq!(ready.reason, "ComponentsNotReady");
    assert_eq!(
        ready.message,
        "recording: PersistentVolumeClaim demo-recording is Pending (storage class \"fast-ssd\"); \
         `kubectl describe pvc demo-recording -n mission` shows why; \
         config: PersistentVolumeClaim demo-config is Pending (no storage class and no default \
         StorageClass); `kubectl describe pvc demo-config -n mission` shows why"
    );
    assert_eq!(condition(&status, PROGRESSING).status, "True");
    assert_eq!(condition(&status, DEGRADED).status, "False");
}

#[test]
fn a_created_claim_the_status_showed_before_was_recreated() {
    let claim_change = |verb, name: &str| Change {
        verb,
        object: ObjectReference {
            kind: Some("PersistentVolumeClaim".into()),
            name: Some(name.into()),
            ..ObjectReference::default()
        },
    };
    let fresh = groundsystem(GroundSystemSpec::default());
    let created = claim_change(Verb::Created, "demo-recording");
    assert_eq!(recreated_claim(&fresh, &created), None, "first creation");

    let mut seen = fresh.clone();
    seen.status = Some(derive(&fresh, &all_ready(), None, at(0)));
    assert_eq!(recreated_claim(&seen, &created), Some(Volume::Recording));
    assert_eq!(
        recreated_claim(&seen, &claim_change(Verb::Created, "demo-config")),
        Some(Volume::Config)
    );
    assert_eq!(
        recreated_claim(&seen, &claim_change(Verb::Updated, "demo-recording")),
        None
    );
    let mut deployment = claim_change(Verb::Created, "demo-recording");
    deployment.object.kind = Some("Deployment".into());
    assert_eq!(recreated_claim(&seen, &deployment), None);
}
