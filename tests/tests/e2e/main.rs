//! End-to-end tests of the GroundSystem operator against the real local control plane (etcd,
//! kube-apiserver, kube-controller-manager, kube-scheduler, kwok). Run them with `hack/test.sh`.

mod leader;
mod lifecycle;
mod readiness;
mod validation;
