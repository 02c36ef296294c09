//! The GroundSystem controller: watches, the reconcile pipeline, events and retries.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, ObjectReference, PersistentVolumeClaim, Service},
    },
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        controller::{Action, Config as ControllerConfig, Error as ControllerError},
        events::{Event, EventType, Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef},
        watcher::{self, watcher},
    },
};
use serde_json::json;
use tracing::{info, warn};

use crate::{
    Error,
    apply::{self, Applier, Change},
    build::{
        self, Instance,
        labels::{GROUNDSYSTEM_LABEL, MANAGER, managed_children_selector},
    },
    crd::{GroundSystem, GroundSystemStatus},
    metrics::Metrics,
    retention,
    status::{self, RolloutBlocked},
    validate::{InvalidSpec, validate},
};

/// Operator-wide settings from the command line.
pub struct Settings {
    /// Where to watch; `None` watches all namespaces.
    pub namespace: Option<String>,
    /// Image for GroundSystems without `spec.image`.
    pub default_image: String,
    /// How long after a successful reconcile a GroundSystem is reconciled again anyway.
    pub resync_interval: Duration,
}

struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: Settings,
    backoff: RetryBackoff,
}

/// Runs the controller until `shutdown` completes, then lets running reconciles finish.
/// `ready` is set once the GroundSystem cache has synced.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), kube::Error> {
    let groundsystems: Api<GroundSystem> = scoped_api(&client, &settings.namespace);
    // Fail early, with a hint, when the CRD is missing or we may not list GroundSystems.
    if let Err(error) = groundsystems.list(&ListParams::default().limit(1)).await {
        warn!(
            %error,
            "cannot list GroundSystems; is the CRD installed (kubectl apply --server-side -f crds/groundsystem.yaml) and may the operator list groundsystems.vgs.io?"
        );
        return Err(error);
    }
    let (store, writer) = reflector::store();
    let spec_changes = watcher(groundsystems, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        // Status patches, the operator's own included, leave the generation alone, so they
        // never trigger a reconcile. The periodic resync is a requeue and not affected.
        .predicate_filter(predicates::generation, PredicateConfig::default());
    // Only the operator's own children are cached, not every Deployment in the cluster.
    let children = watcher::Config::default().labels(&managed_children_selector());
    let controller = Controller::for_stream(spec_changes, store.clone())
        .with_config(ControllerConfig::default().debounce(Duration::from_millis(500)))
        .owns(
            scoped_api::<Deployment>(&client, &settings.namespace),
            children.clone(),
        )
        .owns(
            scoped_api::<Service>(&client, &settings.namespace),
            children.clone(),
        )
        .owns(
            scoped_api::<ConfigMap>(&client, &settings.namespace),
            children.clone(),
        )
        // A retained recording claim has no owner reference, so claims are mapped back to
        // their GroundSystem by label; that way its phase still reaches the status.
        .watches(
            scoped_api::<PersistentVolumeClaim>(&client, &settings.namespace),
            children,
            |claim| {
                let namespace = claim.namespace()?;
                let name = claim.labels().get(GROUNDSYSTEM_LABEL)?;
                Some(ObjectRef::<GroundSystem>::new(name).within(&namespace))
            },
        )
        .graceful_shutdown_on(shutdown);

    tokio::spawn(async move {
        // The store wakes only the latest of its concurrent waiters, and the controller waits on
        // it too, so ask again until it answers; once synced it answers at once.
        loop {
            match tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    ready.store(true, Ordering::Relaxed);
                    info!("GroundSystem watch synced");
                    return;
                }
                Ok(Err(_writer_dropped)) => return,
                Err(_still_waiting) => {}
            }
        }
    });

    let context = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance: None,
            },
        ),
        client,
        metrics,
        settings,
        backoff: RetryBackoff::default(),
    });
    controller
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(%object, "reconciled"),
                // Already logged by `error_policy`, with the retry delay.
                Err(ControllerError::ReconcilerFailed(..)) => {}
                // A requeue or child event for a GroundSystem deleted in the meantime.
                Err(ControllerError::ObjectNotFound(object)) => {
                    tracing::debug!(%object, "GroundSystem gone, nothing to reconcile")
                }
                Err(error) => warn!(%error, "controller error"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

fn scoped_api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

async fn reconcile(gs: Arc<GroundSystem>, context: Arc<Context>) -> Result<Action, Error> {
    if gs.metadata.deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children; a held recording
        // first gets the retention in force now.
        if retention::held(&gs) {
            finish_deletion(&gs, &context).await?;
        }
        context.backoff.reset(&ObjectRef::from_obj(gs.as_ref()));
        return Ok(Action::await_change());
    }
    let started = Instant::now();
    let result = reconcile_pipeline(&gs, &context).await;
    context.metrics.record_reconcile(started.elapsed());
    let object = ObjectRef::from_obj(gs.as_ref());
    match result {
        Ok(()) => {
            context.backoff.reset(&object);
            Ok(Action::requeue(context.settings.resync_interval))
        }
        Err(error) => {
            publish(
                &context,
                &gs,
                EventType::Warning,
                "ReconcileFailed",
                error.to_string(),
            )
            .await;
            Err(error)
        }
    }
}

/// A deleted GroundSystem that holds the retention finalizer: with `Retain`, take the owner
/// reference off the recording claim, then let the deletion go on.
async fn finish_deletion(gs: &GroundSystem, context: &Context) -> Result<(), Error> {
    if !retention::wanted(gs) {
        let instance = Instance::resolve(gs, &context.settings.default_image)?;
        let mut applier = Applier::new(
            context.client.clone(),
            &instance.namespace,
            &context.metrics,
        );
        applier
            .release_recording(&instance, &build::desired(&instance))
            .await?;
        report_changes(context, gs, &applier.changes).await;
    }
    retention::remove(&context.client, gs).await
}

/// dereference -> validate -> build -> apply -> status.
async fn reconcile_pipeline(gs: &GroundSystem, context: &Context) -> Result<(), Error> {
    let instance = Instance::resolve(gs, &context.settings.default_image)?;
    // Before the recording claim can get an owner reference (see `retention`).
    if retention::wanted(gs) && !retention::held(gs) {
        retention::add(&context.client, gs).await?;
    }
    let mut failure = None;
    let (observed, blocked) = if let Err(InvalidSpec(message)) = validate(&gs.spec) {
        // Keep the children on their last valid configuration.
        let observed = apply::observe(context.client.clone(), &instance).await?;
        let blocked = RolloutBlocked {
            reason: status::INVALID_SPEC,
            message,
        };
        (observed, Some(blocked))
    } else {
        let mut applier = Applier::new(
            context.client.clone(),
            &instance.namespace,
            &context.metrics,
        );
        let applied = applier
            .apply_desired(&instance, &build::desired(&instance))
            .await;
        // Report what was written even when a later write failed.
        report_changes(context, gs, &applier.changes).await;
        report_adoptions(context, gs, &applier.adopted).await;
        match applied {
            Ok((observed, failures)) if failures.is_empty() => {
                // The claim has no owner reference any more: nothing left to hold.
                if !retention::wanted(gs) && retention::held(gs) {
                    retention::remove(&context.client, gs).await?;
                }
                (observed, None)
            }
            // Every failed write is on the status, so that one fix does not just reveal the next.
            Ok((_, failures)) => {
                let messages: Vec<String> = failures.iter().map(ToString::to_string).collect();
                let blocked = RolloutBlocked {
                    reason: status::APPLY_FAILED,
                    message: messages.join("; "),
                };
                failure = failures.into_iter().next();
                // What exists, including the children whose write failed.
                let observed = apply::observe(context.client.clone(), &instance).await?;
                (observed, Some(blocked))
            }
            Err(error) => {
                let blocked = RolloutBlocked {
                    reason: status::APPLY_FAILED,
                    message: error.to_string(),
                };
                failure = Some(error);
                let observed = apply::observe(context.client.clone(), &instance).await?;
                (observed, Some(blocked))
            }
        }
    };

    let status = status::derive(gs, &observed, blocked.as_ref(), Timestamp::now());
    if status::needs_update(gs, &status) {
        patch_status(context, &instance, &status).await?;
        // Warn once per change, not on every resync; the message stays on the status. (Apply
        // failures are reported by `reconcile` on every attempt.)
        if let Some(RolloutBlocked { reason, message }) = &blocked
            && *reason == status::INVALID_SPEC
        {
            warn!(groundsystem = %gs.name_any(), "invalid spec: {message}");
            publish(context, gs, EventType::Warning, reason, message.clone()).await;
        }
    }
    failure.map_or(Ok(()), Err)
}

async fn patch_status(
    context: &Context,
    instance: &Instance<'_>,
    status: &GroundSystemStatus,
) -> Result<(), Error> {
    let api: Api<GroundSystem> = Api::namespaced(context.client.clone(), &instance.namespace);
    let patch = json!({
        "apiVersion": GroundSystem::api_version(&()),
        "kind": GroundSystem::kind(&()),
        "status": status,
    });
    api.patch_status(
        &instance.name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube("update status of", "GroundSystem", &instance.name, e))?;
    context.metrics.record_write("GroundSystem");
    Ok(())
}

/// Logs and publishes an event for each child this reconcile changed; a no-op reconcile says
/// nothing. Each event names its child as the related object, so the event series of different
/// children do not merge.
async fn report_changes(context: &Context, gs: &GroundSystem, changes: &[Change]) {
    if changes.is_empty() {
        return;
    }
    let summary: Vec<String> = changes.iter().map(ToString::to_string).collect();
    info!(groundsystem = %gs.name_any(), "{}", summary.join(", "));
    for change in changes {
        let event = match status::recreated_claim(gs, change) {
            Some(volume) => {
                let note = format!(
                    "{change}: it was deleted outside the operator and is new and empty; what the \
                     {} volume held is gone unless its PersistentVolume was retained",
                    volume.component()
                );
                warn!(groundsystem = %gs.name_any(), "{note}");
                Event {
                    type_: EventType::Warning,
                    reason: "VolumeRecreated".to_owned(),
                    note: Some(note),
                    action: "Reconcile".to_owned(),
                    secondary: Some(change.object.clone()),
                }
            }
            None => Event {
                type_: EventType::Normal,
                reason: change.verb.as_str().to_owned(),
                note: Some(change.to_string()),
                action: "Reconcile".to_owned(),
                secondary: Some(change.object.clone()),
            },
        };
        publish_event(context, gs, &event).await;
    }
}

/// Warns of each recording claim that this reconcile gave an owner: until now nothing deleted it,
/// and it may hold the recordings of an earlier GroundSystem of the same name.
async fn report_adoptions(context: &Context, gs: &GroundSystem, adopted: &[ObjectReference]) {
    for claim in adopted {
        let note = format!(
            "PersistentVolumeClaim {} had no owner: it was kept under retentionPolicy Retain and \
             may hold the recordings of an earlier GroundSystem of this name. With \
             retentionPolicy Delete it is now deleted with this GroundSystem, recordings included; \
             set spec.recording.retentionPolicy: Retain to keep it",
            claim.name.as_deref().unwrap_or_default()
        );
        warn!(groundsystem = %gs.name_any(), "{note}");
        let event = Event {
            type_: EventType::Warning,
            reason: "RecordingAdopted".to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: Some(claim.clone()),
        };
        publish_event(context, gs, &event).await;
    }
}

/// Publishes an event about the GroundSystem itself.
async fn publish(
    context: &Context,
    gs: &GroundSystem,
    type_: EventType,
    reason: &str,
    note: String,
) {
    // The events API caps notes at 1 kB.
    let mut note = note;
    if note.len() > 1000 {
        let mut end = 1000;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".to_owned(),
        secondary: None,
    };
    publish_event(context, gs, &event).await;
}

async fn publish_event(context: &Context, gs: &GroundSystem, event: &Event) {
    if let Err(error) = context.recorder.publish(event, &gs.object_ref(&())).await {
        warn!(%error, "could not publish event");
    }
}

fn error_policy(gs: Arc<GroundSystem>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.record_error(error.metric_reason());
    let delay = context.backoff.next_delay(ObjectRef::from_obj(gs.as_ref()));
    warn!(groundsystem = %gs.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Per-GroundSystem exponential backoff: 5 s after the first failure, doubling up to 5 min,
/// back to 5 s after a success. One broken GroundSystem does not slow down the others.
#[derive(Default)]
struct RetryBackoff {
    failures: Mutex<HashMap<ObjectRef<GroundSystem>, u32>>,
}

impl RetryBackoff {
    const FIRST: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(300);

    fn next_delay(&self, object: ObjectRef<GroundSystem>) -> Duration {
        let mut failures = self.failures.lock().expect("backoff lock poisoned");
        let count = failures.entry(object).or_default();
        let delay = Self::FIRST
            .saturating_mul(2u32.saturating_pow(*count))
            .min(Self::MAX);
        *count = count.saturating_add(1);
        delay
    }

    fn reset(&self, object: &ObjectRef<GroundSystem>) {
        self.failures
            .lock()
            .expect("backoff lock poisoned")
            .remove(object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_object_and_resets() {
        let backoff = RetryBackoff::default();
        let a = ObjectRef::<GroundSystem>::new("a").within("ns");
        let b = ObjectRef::<GroundSystem>::new("b").within("ns");
        let delays: Vec<u64> = (0..8)
            .map(|_| backoff.next_delay(a.clone()).as_secs())
            .collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.next_delay(b.clone()).as_secs(), 5);
        backoff.reset(&a);
        assert_eq!(backoff.next_delay(a).as_secs(), 5);
    }
}
