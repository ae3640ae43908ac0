//! The set's lock Leases on a real API server ([`LeaseStore`] over `coordination.k8s.io/v1`),
//! through a client of their own, outside the run's request counts.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::Client;

use crate::api::{ClusterError, LeaseFuture, LeaseRecord, LeaseStore};

/// Leases through `client`.
pub struct KubeLeases {
    client: Client,
}

impl KubeLeases {
    /// Leases through `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    fn api(&self, namespace: &str) -> Api<Lease> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

/// A failed Lease request: a 409 (it exists, or changed since read) is `Modified`.
fn error(
    action: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> ClusterError {
    let what = format!("the lock Lease `{namespace}/{name}`");
    move |source| match &source {
        kube::Error::Api(s) if s.code == 409 => ClusterError::Modified {
            what,
            message: s.message.clone(),
        },
        _ => ClusterError::Api {
            action,
            what,
            source: Box::new(source),
        },
    }
}

fn record(lease: Lease) -> LeaseRecord {
    let spec = lease.spec.unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity.unwrap_or_default(),
        ttl_seconds: spec.lease_duration_seconds.map_or(15, i64::from),
        acquired: spec.acquire_time.map(|t| t.0),
        renewed: spec.renew_time.map(|t| t.0),
        resource_version: lease.metadata.resource_version.unwrap_or_default(),
    }
}

fn lease(name: &str, namespace: &str, r: &LeaseRecord) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            resource_version: Some(r.resource_version.clone()).filter(|v| !v.is_empty()),
            labels: Some([("app.kubernetes.io/managed-by".to_owned(), "kiln".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(r.holder.clone()),
            lease_duration_seconds: Some(r.ttl_seconds.clamp(1, i64::from(i32::MAX)) as i32),
            acquire_time: r.acquired.map(MicroTime),
            renew_time: r.renewed.map(MicroTime),
            ..LeaseSpec::default()
        }),
    }
}

impl LeaseStore for KubeLeases {
    fn get<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
    ) -> LeaseFuture<'a, Option<LeaseRecord>> {
        Box::pin(async move {
            let got = self.api(namespace).get_opt(name).await;
            Ok(got.map_err(error("read", namespace, name))?.map(record))
        })
    }

    fn create<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        r: &'a LeaseRecord,
    ) -> LeaseFuture<'a, LeaseRecord> {
        Box::pin(async move {
            let made = self
                .api(namespace)
                .create(&PostParams::default(), &lease(name, namespace, r))
                .await;
            Ok(record(made.map_err(error("take", namespace, name))?))
        })
    }

    fn replace<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        r: &'a LeaseRecord,
    ) -> LeaseFuture<'a, LeaseRecord> {
        Box::pin(async move {
            let replaced = self
                .api(namespace)
                .replace(name, &PostParams::default(), &lease(name, namespace, r))
                .await;
            Ok(record(replaced.map_err(error("write", namespace, name))?))
        })
    }

    fn delete<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        resource_version: &'a str,
    ) -> LeaseFuture<'a, ()> {
        Box::pin(async move {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(resource_version.to_owned()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            match self.api(namespace).delete(name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
                Err(e) => Err(error("release", namespace, name)(e)),
            }
        })
    }
}
