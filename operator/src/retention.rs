//! The recording's retention at deletion time.
//!
//! With `retentionPolicy: Delete` the recording claim carries the GroundSystem's owner reference,
//! and the garbage collector deletes it with the GroundSystem. Switching back to `Retain` takes
//! the reference off, but only when the operator next reconciles: a GroundSystem deleted in
//! between would take the recording with it. So a GroundSystem whose claim may carry the
//! reference (its policy is, or was, `Delete`) holds a finalizer, and its deletion waits until
//! the operator has applied the policy in force at that moment. `Retain` GroundSystems (the
//! default) hold none, and are deleted without the operator.

use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
};
use serde_json::json;

use crate::{
    Error,
    crd::{GroundSystem, RetentionPolicy},
};

pub const FINALIZER: &str = "vgs.io/recording-retention";

/// Whether the spec's policy needs the finalizer.
pub fn wanted(gs: &GroundSystem) -> bool {
    gs.spec.recording.retention_policy == RetentionPolicy::Delete
}

/// Whether the GroundSystem holds the finalizer.
pub fn held(gs: &GroundSystem) -> bool {
    gs.finalizers().iter().any(|f| f == FINALIZER)
}

/// Adds the finalizer; the test on the current list makes a concurrent change fail (and retry)
/// rather than be overwritten.
pub async fn add(client: &Client, gs: &GroundSystem) -> Result<(), Error> {
    let patch = match gs.metadata.finalizers.as_ref() {
        None => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": null },
            { "op": "add", "path": "/metadata/finalizers", "value": [FINALIZER] },
        ]),
        Some(current) => json!([
            { "op": "test", "path": "/metadata/finalizers", "value": current },
            { "op": "add", "path": "/metadata/finalizers/-", "value": FINALIZER },
        ]),
    };
    patch_finalizers(client, gs, patch, "add the finalizer to").await
}

/// Removes the finalizer.
pub async fn remove(client: &Client, gs: &GroundSystem) -> Result<(), Error> {
    let Some(index) = gs.finalizers().iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let path = format!("/metadata/finalizers/{index}");
    let patch = json!([
        { "op": "test", "path": path, "value": FINALIZER },
        { "op": "remove", "path": path },
    ]);
    patch_finalizers(client, gs, patch, "remove the finalizer from").await
}

async fn patch_finalizers(
    client: &Client,
    gs: &GroundSystem,
    patch: serde_json::Value,
    action: &'static str,
) -> Result<(), Error> {
    let namespace = gs.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<GroundSystem> = Api::namespaced(client.clone(), &namespace);
    let patch: json_patch::Patch = serde_json::from_value(patch).expect("a well-formed JSON patch");
    api.patch(
        &gs.name_any(),
        &PatchParams::default(),
        &Patch::<()>::Json(patch),
    )
    .await
    .map_err(|e| Error::kube(action, "GroundSystem", &gs.name_any(), e))?;
    Ok(())
}
