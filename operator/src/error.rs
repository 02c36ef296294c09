use crate::build::labels::MANAGER;

/// Why a reconcile failed. Each variant maps to an `errors by reason` metric label.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Only a GroundSystem that was never stored (e.g. a hand-written test object) lacks these.
    #[error("the GroundSystem has no metadata.{0}")]
    MissingMetadata(&'static str),

    /// An object has a child's name but was not made for this GroundSystem: it is someone
    /// else's data, so it is neither taken over nor written.
    #[error(
        "{kind} {name} already exists and does not belong to GroundSystem {groundsystem}: \
         {MANAGER} never takes over objects it did not create; rename or remove that {kind}, \
         or give the GroundSystem another name"
    )]
    ChildConflict {
        kind: String,
        name: String,
        groundsystem: String,
    },

    /// The API server refused to resize a claim to the spec's size.
    #[error("{0}")]
    ClaimRefused(Box<ClaimRefusal>),

    /// A claim exists (e.g. kept from an earlier GroundSystem of the name) with another storage
    /// class or access modes than the spec's; neither can change.
    #[error("{0}")]
    ClaimMismatch(Box<ClaimMismatch>),

    #[error("{MANAGER} could not {action} {kind} {name}: {detail}")]
    Kube {
        action: &'static str,
        kind: String,
        name: String,
        /// The API server's message alone, without the status object around it.
        detail: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl Error {
    pub fn kube(action: &'static str, kind: &str, name: &str, source: kube::Error) -> Self {
        let detail = match &source {
            kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
            other => other.to_string(),
        };
        Self::Kube {
            action,
            kind: kind.to_owned(),
            name: name.to_owned(),
            detail,
            source: Box::new(source),
        }
    }

    /// Low-cardinality label for the errors metric.
    pub fn metric_reason(&self) -> String {
        match self {
            Self::MissingMetadata(_) => "missing_metadata".to_owned(),
            Self::ChildConflict { .. } => "child_conflict".to_owned(),
            Self::ClaimRefused(_) => "claim_refused".to_owned(),
            Self::ClaimMismatch(_) => "claim_mismatch".to_owned(),
            Self::Kube { action, source, .. } => match source.as_ref() {
                kube::Error::Api(status) if !status.reason.is_empty() => {
                    format!("{action}_{}", status.reason.to_lowercase())
                }
                kube::Error::Api(status) => format!("{action}_{}", status.code),
                _ => format!("{action}_transport"),
            },
        }
    }
}

/// A claim that could not take the spec's size, in terms of the spec.
#[derive(Debug, thiserror::Error)]
#[error(
    "{field}: PersistentVolumeClaim {name} has {has} (storage class {class}) and cannot become \
     {wanted}: {detail}. Set {field} back to {has}, or larger only if the storage class allows \
     volume expansion"
)]
pub struct ClaimRefusal {
    pub field: String,
    pub name: String,
    pub has: String,
    pub wanted: String,
    pub class: String,
    pub detail: String,
}

/// An existing claim that cannot take the spec's storage class or access modes, in terms of the
/// spec, with the two ways out.
#[derive(Debug, thiserror::Error)]
#[error(
    "{field}: PersistentVolumeClaim {name} has {has} and cannot change to {wanted}: a claim's \
     storage class and access modes are fixed when it is made{held}. {field} cannot change on \
     a GroundSystem either. To use the claim, delete this GroundSystem (the claim stays) and create it \
     again with {field}: {has}. For a new claim,{keep} delete this GroundSystem, then the claim \
     (kubectl delete pvc {name} -n {namespace}), and create the GroundSystem again",
    held = if *bound { ", and it is bound to a volume that may hold data" } else { "; it is not bound to a volume yet, so it holds nothing" },
    keep = if *bound { " once its data is kept elsewhere," } else { "" }
)]
pub struct ClaimMismatch {
    pub field: String,
    pub name: String,
    pub namespace: String,
    pub has: String,
    pub wanted: String,
    pub bound: bool,
}
