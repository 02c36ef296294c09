//! Server-side apply of the desired children, with one field manager.
//!
//! Every child is applied whole on every reconcile. Applying unchanged content is a no-op on the
//! API server (the resourceVersion stays the same), which is how a write is told apart from a
//! no-op: only a changed resourceVersion counts as a write, and only writes produce events.
//!
//! Omitting a field the manager applied before removes it. That is what takes the owner
//! reference off the recording claim when its retention policy changes from Delete to Retain.

use std::fmt::Debug;

use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::Deployment,
        core::v1::{ObjectReference, PersistentVolumeClaim, Service},
    },
};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{DeleteParams, PartialObjectMeta, Patch, PatchParams, Preconditions},
};
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    Error,
    build::{
        Desired, Instance, Role, Volume,
        labels::{GROUNDSYSTEM_LABEL, MANAGED_BY_LABEL, MANAGER},
    },
    error::{ClaimMismatch, ClaimRefusal},
    metrics::Metrics,
    status::Observed,
};

/// What happened to a child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Created,
    Updated,
    Deleted,
}

impl Verb {
    /// Also the event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Created => "Created",
            Verb::Updated => "Updated",
            Verb::Deleted => "Deleted",
        }
    }
}

/// One write that changed a child.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub verb: Verb,
    pub object: ObjectReference,
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.object.kind.as_deref().unwrap_or_default();
        let name = self.object.name.as_deref().unwrap_or_default();
        write!(f, "{} {kind} {name}", self.verb.as_str())
    }
}

/// Writes children of one GroundSystem into its namespace.
pub struct Applier<'a> {
    client: Client,
    namespace: &'a str,
    metrics: &'a Metrics,
    /// The writes that changed something, in order.
    pub changes: Vec<Change>,
    /// Recording claims that had no owner (kept under `Retain`) and now have this GroundSystem
    /// as owner, because its policy is `Delete`: they go, recordings included, when it does.
    pub adopted: Vec<ObjectReference>,
}

impl<'a> Applier<'a> {
    pub fn new(client: Client, namespace: &'a str, metrics: &'a Metrics) -> Self {
        Self {
            client,
            namespace,
            metrics,
            changes: Vec::new(),
            adopted: Vec::new(),
        }
    }

    /// Applies every desired child (the ConfigMap and claims first, as the pods mount them),
    /// deletes the workloads of disabled roles and returns the children as the API server
    /// returned them, with every child write that failed.
    ///
    /// Nothing is written while any object of a child's name belongs to someone else. A failed
    /// claim (e.g. a storage class that cannot expand) does not hold back the workloads, so the
    /// rest of a change still rolls out; a failed ConfigMap does, as pods must never carry a
    /// config hash whose config is not in place.
    pub async fn apply_desired(
        &mut self,
        instance: &Instance<'_>,
        desired: &Desired,
    ) -> Result<(Observed, Vec<Error>), Error> {
        let config_map_version = self.current_version(instance, &desired.config_map).await?;
        let mut claims = Vec::new();
        for (volume, claim) in &desired.volumes {
            claims.push((*volume, claim, self.existing_claim(instance, claim).await?));
        }
        let mut workloads = Vec::new();
        for workload in &desired.workloads {
            let service_version = self.current_version(instance, &workload.service).await?;
            let deployment_version = self.current_version(instance, &workload.deployment).await?;
            workloads.push((workload, service_version, deployment_version));
        }

        let mut observed = Observed::default();
        let mut failures = Vec::new();
        self.apply(&desired.config_map, config_map_version).await?;
        for (volume, claim, existing) in claims {
            if let Some(existing) = &existing {
                // Fixed when the claim was made: applying would only get the API server's
                // "spec is immutable" diff.
                if let Some(mismatch) = claim_mismatch(volume, claim, existing, self.namespace) {
                    failures.push(Error::ClaimMismatch(Box::new(mismatch)));
                    observed.claims.insert(volume, existing.clone());
                    continue;
                }
                if volume == Volume::Recording
                    && existing.owner_references().is_empty()
                    && !claim.owner_references().is_empty()
                {
                    self.adopted.push(existing.object_ref(&()));
                }
            }
            let version = existing.as_ref().and_then(|e| e.resource_version());
            match self.apply(claim, version).await {
                Ok(claim) => {
                    observed.claims.insert(volume, claim);
                }
                Err(error) => failures.push(explain_claim_refusal(
                    volume,
                    claim,
                    existing.as_ref(),
                    error,
                )),
            }
        }
        for (workload, service_version, deployment_version) in workloads {
            if let Err(error) = self
                .apply_service(instance, &workload.service, service_version)
                .await
            {
                failures.push(error);
            }
            match self.apply(&workload.deployment, deployment_version).await {
                Ok(deployment) => {
                    observed.deployments.insert(workload.role, deployment);
                }
                Err(error) => failures.push(error),
            }
        }
        for role in &desired.disabled {
            let name = instance.child_name(role.name_suffix());
            self.delete_owned::<Deployment>(instance, &name).await?;
            self.delete_owned::<Service>(instance, &name).await?;
        }
        Ok((observed, failures))
    }

    /// The existing claim of `claim`'s name, if any; an error if it does not belong to this
    /// GroundSystem. Read whole: its class, modes and size are checked before the apply.
    async fn existing_claim(
        &self,
        instance: &Instance<'_>,
        claim: &PersistentVolumeClaim,
    ) -> Result<Option<PersistentVolumeClaim>, Error> {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), self.namespace);
        let name = claim.name_any();
        let existing = api
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("read", "PersistentVolumeClaim", &name, e))?;
        if let Some(existing) = &existing {
            ensure_belongs::<PersistentVolumeClaim>(existing, instance)?;
        }
        Ok(existing)
    }

    /// Applies a Service; one that a hand edit made impossible to apply is replaced.
    ///
    /// Ports merge by port number, so a port another manager renumbered stays beside the one
    /// the operator applies, and the two carry the same name: the API server then refuses
    /// every apply (422), for good. A Service holds no data, so deleting and recreating it is
    /// the repair (its cluster IP changes; its DNS name does not).
    async fn apply_service(
        &mut self,
        instance: &Instance<'_>,
        service: &Service,
        version: Option<String>,
    ) -> Result<(), Error> {
        match self.apply(service, version.clone()).await {
            Err(Error::Kube { source, .. })
                if version.is_some()
                    && matches!(source.as_ref(), kube::Error::Api(status) if status.code == 422) =>
            {
                tracing::warn!(
                    service = %service.name_any(),
                    "the Service cannot take the desired spec beside fields another manager set; recreating it"
                );
                self.delete_owned::<Service>(instance, &service.name_any())
                    .await?;
                self.apply(service, None).await.map(drop)
            }
            result => result.map(drop),
        }
    }

    async fn read_metadata<K>(&self, name: &str) -> Result<Option<PartialObjectMeta<K>>, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        api.get_metadata_opt(name)
            .await
            .map_err(|e| Error::kube("read", &K::kind(&()), name, e))
    }

    /// The resourceVersion of the existing object of `object`'s name, if any; an error if that
    /// object does not belong to this GroundSystem.
    async fn current_version<K>(
        &self,
        instance: &Instance<'_>,
        object: &K,
    ) -> Result<Option<String>, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let name = object.name_any();
        let Some(existing) = self.read_metadata::<K>(&name).await? else {
            return Ok(None);
        };
        ensure_belongs::<K>(&existing, instance)?;
        Ok(existing.metadata.resource_version)
    }

    async fn apply<K>(&mut self, object: &K, before: Option<String>) -> Result<K, Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + Serialize
            + DeserializeOwned,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let name = object.name_any();
        let kind = K::kind(&()).to_string();
        let applied = api
            .patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(object),
            )
            .await
            .map_err(|e| Error::kube("apply", &kind, &name, e))?;
        let verb = match before {
            None => Verb::Created,
            Some(version) if applied.resource_version().as_ref() != Some(&version) => Verb::Updated,
            Some(_) => return Ok(applied),
        };
        self.changes.push(Change {
            verb,
            object: applied.object_ref(&()),
        });
        self.metrics.record_write(&kind);
        Ok(applied)
    }

    /// Applies the desired recording claim if it exists, never creating it: while a GroundSystem
    /// with retention `Retain` is deleted, this takes its owner reference off the claim so the
    /// garbage collector leaves the recording.
    pub async fn release_recording(
        &mut self,
        instance: &Instance<'_>,
        desired: &Desired,
    ) -> Result<(), Error> {
        for (volume, claim) in &desired.volumes {
            if *volume == Volume::Recording
                && let Some(version) = self.current_version(instance, claim).await?
            {
                self.apply(claim, Some(version)).await?;
            }
        }
        Ok(())
    }

    /// Deletes `name` if this GroundSystem controls it; an object of that name that belongs to
    /// someone else is left alone.
    async fn delete_owned<K>(&mut self, instance: &Instance<'_>, name: &str) -> Result<(), Error>
    where
        K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
            + Clone
            + Debug
            + DeserializeOwned,
    {
        let Some(existing) = self.read_metadata::<K>(name).await? else {
            return Ok(());
        };
        let api: Api<K> = Api::namespaced(self.client.clone(), self.namespace);
        let kind = K::kind(&()).to_string();
        if !is_controlled_by(&existing, instance) {
            return Ok(());
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: existing.uid(),
                ..Preconditions::default()
            }),
            ..DeleteParams::background()
        };
        match api.delete(name, &params).await {
            Ok(_) => {}
            // Gone in between (e.g. garbage-collected): what we wanted.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
            Err(e) => return Err(Error::kube("delete", &kind, name, e)),
        }
        self.changes.push(Change {
            verb: Verb::Deleted,
            object: existing.object_ref(&()),
        });
        self.metrics.record_write(&kind);
        Ok(())
    }
}

/// Reads the children without changing them, for a reconcile that must not roll out its spec.
/// Objects of a child's name that this GroundSystem does not own are not its children.
pub async fn observe(client: Client, instance: &Instance<'_>) -> Result<Observed, Error> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &instance.namespace);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, &instance.namespace);
    let mut observed = Observed::default();
    for role in Role::ALL {
        let name = instance.child_name(role.name_suffix());
        if let Some(deployment) = deployments
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("read", "Deployment", &name, e))?
            .filter(|deployment| is_controlled_by(deployment, instance))
        {
            observed.deployments.insert(role, deployment);
        }
    }
    for volume in Volume::ALL {
        let name = instance.child_name(volume.component());
        // A retained recording claim has no owner reference, only the label.
        if let Some(claim) = claims
            .get_opt(&name)
            .await
            .map_err(|e| Error::kube("read", "PersistentVolumeClaim", &name, e))?
            .filter(|claim| claim.labels().get(GROUNDSYSTEM_LABEL) == Some(&instance.name))
        {
            observed.claims.insert(volume, claim);
        }
    }
    Ok(observed)
}

/// How an existing claim differs from the desired one in what a claim cannot change: its
/// storage class (when the spec names one; unset takes whatever the claim got) and its access
/// modes.
pub fn claim_mismatch(
    volume: Volume,
    desired: &PersistentVolumeClaim,
    existing: &PersistentVolumeClaim,
    namespace: &str,
) -> Option<ClaimMismatch> {
    let class = |claim: &PersistentVolumeClaim| {
        claim
            .spec
            .as_ref()
            .and_then(|spec| spec.storage_class_name.clone())
    };
    let modes = |claim: &PersistentVolumeClaim| {
        let mut modes = claim
            .spec
            .as_ref()
            .and_then(|spec| spec.access_modes.clone())
            .unwrap_or_default();
        modes.sort();
        modes
    };
    let (field, has, wanted) = match (class(desired), class(existing)) {
        (Some(wanted), has) if has.as_ref() != Some(&wanted) => (
            "storageClassName",
            has.unwrap_or_else(|| "none".to_owned()),
            wanted,
        ),
        _ if modes(desired) != modes(existing) => (
            "accessModes",
            format!("[{}]", modes(existing).join(", ")),
            format!("[{}]", modes(desired).join(", ")),
        ),
        _ => return None,
    };
    let bound = existing
        .spec
        .as_ref()
        .and_then(|spec| spec.volume_name.as_deref())
        .is_some_and(|name| !name.is_empty());
    Some(ClaimMismatch {
        field: format!("spec.{}.{field}", volume.component()),
        name: existing.name_any(),
        namespace: namespace.to_owned(),
        has,
        wanted,
        bound,
    })
}

/// A size change the API server refused for a claim, said in terms of the spec: the field, what
/// the claim (`current`, as read before the apply) has, and the value that applies. (Its message
/// alone names neither.)
fn explain_claim_refusal(
    volume: Volume,
    desired: &PersistentVolumeClaim,
    current: Option<&PersistentVolumeClaim>,
    error: Error,
) -> Error {
    // Only a refusal (invalid or forbidden), not a failure to reach the API server.
    let Error::Kube { detail, source, .. } = &error else {
        return error;
    };
    if !matches!(source.as_ref(), kube::Error::Api(status) if [403, 422].contains(&status.code)) {
        return error;
    }
    let storage = |claim: &PersistentVolumeClaim| {
        claim
            .spec
            .as_ref()?
            .resources
            .as_ref()?
            .requests
            .as_ref()?
            .get("storage")
            .map(|quantity| quantity.0.clone())
    };
    let Some(current) = current else {
        return error;
    };
    let (Some(has), Some(wanted)) = (storage(current), storage(desired)) else {
        return error;
    };
    if has == wanted {
        return error;
    }
    let class = current
        .spec
        .as_ref()
        .and_then(|spec| spec.storage_class_name.clone())
        .unwrap_or_else(|| "none".to_owned());
    Error::ClaimRefused(Box::new(ClaimRefusal {
        field: format!("spec.{}.size", volume.component()),
        name: desired.name_any(),
        has,
        wanted,
        class,
        detail: detail.clone(),
    }))
}

/// Whether this GroundSystem may write `object`: it controls it, or the operator made it for a
/// GroundSystem of this name and no one controls it any more (a retained recording, picked up
/// again by a new GroundSystem of the same name).
fn belongs_to(object: &impl Resource, instance: &Instance<'_>) -> bool {
    let labels = object.labels();
    let uncontrolled = object
        .owner_references()
        .iter()
        .all(|owner| owner.controller != Some(true));
    is_controlled_by(object, instance)
        || (uncontrolled
            && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGER)
            && labels.get(GROUNDSYSTEM_LABEL) == Some(&instance.name))
}

/// `existing`, an object of kind `K`, must belong to this GroundSystem to be written.
fn ensure_belongs<K: Resource<DynamicType = ()>>(
    existing: &impl Resource,
    instance: &Instance<'_>,
) -> Result<(), Error> {
    if belongs_to(existing, instance) {
        return Ok(());
    }
    Err(Error::ChildConflict {
        kind: K::kind(&()).to_string(),
        name: existing.name_any(),
        groundsystem: instance.name.clone(),
    })
}

fn is_controlled_by(object: &impl Resource, instance: &Instance<'_>) -> bool {
    object
        .owner_references()
        .iter()
        .any(|owner| owner.controller == Some(true) && owner.uid == instance.owner.uid)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;

    use super::*;

    fn claim(
        class: Option<&str>,
        modes: &[&str],
        volume_name: Option<&str>,
    ) -> PersistentVolumeClaim {
        PersistentVolumeClaim {
            metadata: kube::api::ObjectMeta {
                name: Some("mission-recording".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                storage_class_name: class.map(str::to_owned),
                access_modes: Some(modes.iter().map(|m| (*m).to_owned()).collect()),
                volume_name: volume_name.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_claim_mismatch_names_the_field_the_values_and_both_ways_out() {
        let kept = claim(Some("standard"), &["ReadWriteOnce"], Some("pv-1"));
        let mismatch = |desired| claim_mismatch(Volume::Recording, &desired, &kept, "ops");
        assert!(mismatch(claim(Some("standard"), &["ReadWriteOnce"], None)).is_none());
        // Unset takes whatever class the claim got (the default class, resolved on creation).
        assert!(mismatch(claim(None, &["ReadWriteOnce"], None)).is_none());
        assert_eq!(
            mismatch(claim(Some("fast"), &["ReadWriteOnce"], None))
                .unwrap()
                .to_string(),
            "spec.recording.storageClassName: PersistentVolumeClaim mission-recording has \
             standard and cannot change to fast: a claim's storage class and access modes are \
             fixed when it is made, and it is bound to a volume that may hold data. \
             spec.recording.storageClassName cannot change on a GroundSystem either. To use the \
             claim, delete this \
             GroundSystem (the claim stays) and create it again with \
             spec.recording.storageClassName: standard. For a new claim, once its data is kept \
             elsewhere, delete this GroundSystem, then the claim (kubectl delete pvc \
             mission-recording -n ops), and create the GroundSystem again"
        );
        let modes = mismatch(claim(None, &["ReadWriteMany"], None)).unwrap();
        assert_eq!(modes.field, "spec.recording.accessModes");
        assert_eq!(
            (modes.has.as_str(), modes.wanted.as_str()),
            ("[ReadWriteOnce]", "[ReadWriteMany]")
        );

        // An unbound claim (a wrong class stays Pending) holds nothing.
        let pending = claim(Some("typo"), &["ReadWriteOnce"], None);
        let message = claim_mismatch(
            Volume::Config,
            &claim(Some("standard"), &["ReadWriteOnce"], None),
            &pending,
            "ops",
        )
        .unwrap()
        .to_string();
        assert!(
            message.starts_with("spec.config.storageClassName: "),
            "{message}"
        );
        assert!(
            message.contains("it is not bound to a volume yet, so it holds nothing. spec.config.storageClassName cannot change on a GroundSystem either. To use the claim, delete this GroundSystem (the claim stays) and create it again with spec.config.storageClassName: typo. For a new claim, delete this GroundSystem, then the claim (kubectl delete pvc"),
            "{message}"
        );
    }
}
