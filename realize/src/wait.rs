//! Waiting on the cluster: health gates after a write, absence after a delete. Both follow the
//! object with a watch ([`ClusterApi::watch_until`]: a GET, then a watch from its
//! resourceVersion), so a change is seen when it happens, not at the next poll.

use std::time::Duration;

use serde_json::Value;

use crate::api::ClusterApi;
use crate::desired::ObjectKey;
use crate::error::RealizeError;
use crate::health;

/// Waits until `obj` passes its health gate ([`health::condition`]); a condition that says it
/// failed for good ends the wait at once.
pub async fn ready(
    cluster: &impl ClusterApi,
    obj: &Value,
    timeout: Duration,
) -> Result<(), RealizeError> {
    let Some(condition) = health::condition(obj) else {
        return Ok(());
    };
    let key = ObjectKey::of(obj);
    let mut last_progress = None;
    let mut verdict = |live: Option<&Value>| -> Option<Result<(), String>> {
        let live = live?;
        if health::is_ready(live) {
            return Some(Ok(()));
        }
        if let Some(failed) = health::failure(live) {
            return Some(Err(failed));
        }
        let progress = health::progress(live);
        if progress != last_progress {
            tracing::info!(object = %key, waiting_for = condition, progress = progress.as_deref().unwrap_or("-"), "waiting");
            last_progress = progress;
        }
        None
    };
    let settled = cluster
        .watch_until(
            &key.group_kind,
            &key.namespace,
            &key.name,
            timeout,
            &mut verdict,
        )
        .await?;
    match settled {
        Some(Ok(())) => Ok(()),
        Some(Err(failed)) => Err(RealizeError::GateFailed {
            object: key.to_string(),
            condition: failed,
        }),
        None => Err(RealizeError::Unhealthy {
            object: key.to_string(),
            condition: condition.to_owned(),
            timeout,
        }),
    }
}

/// Waits until the object `key` no longer exists.
pub async fn gone(
    cluster: &impl ClusterApi,
    key: &ObjectKey,
    timeout: Duration,
) -> Result<(), RealizeError> {
    let mut verdict = |live: Option<&Value>| live.is_none().then_some(());
    let settled = cluster
        .watch_until(
            &key.group_kind,
            &key.namespace,
            &key.name,
            timeout,
            &mut verdict,
        )
        .await?;
    settled.ok_or_else(|| RealizeError::Unhealthy {
        object: key.to_string(),
        condition: "deleted".to_owned(),
        timeout,
    })
}

/// Waits until the API server's discovery serves the kind of a CustomResourceDefinition in each
/// version the CRD serves. `Established` can come a moment before the group-version's discovery
/// document lists it (the test server, busy, answered 404 for it right after), and applying a
/// custom resource needs discovery.
pub async fn served(
    cluster: &impl ClusterApi,
    crd: &Value,
    timeout: Duration,
) -> Result<(), RealizeError> {
    let group = crd.pointer("/spec/group").and_then(Value::as_str);
    let kind = crd.pointer("/spec/names/kind").and_then(Value::as_str);
    let (Some(group), Some(kind)) = (group, kind) else {
        return Ok(());
    };
    let versions: Vec<&str> = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool() == Some(true))
        .filter_map(|v| v["name"].as_str())
        .collect();
    let deadline = tokio::time::Instant::now() + timeout;
    for version in versions {
        let api_version = format!("{group}/{version}");
        loop {
            match cluster.scope(&api_version, kind).await {
                Ok(_) => break,
                Err(e) if e.is_not_served() && tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if e.is_not_served() => {
                    return Err(RealizeError::Unhealthy {
                        object: ObjectKey::of(crd).to_string(),
                        condition: format!("`{kind}` in `{api_version}` served by discovery"),
                        timeout,
                    })
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(())
}
