//! Waiting on the cluster: health gates after a write, absence after a delete. Both poll with
//! a backoff from 100 ms to 2 s until their deadline.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;

use crate::api::ClusterApi;
use crate::desired::ObjectKey;
use crate::error::RealizeError;
use crate::health;

/// Polls with a doubling delay (100 ms to 2 s) until `done` says something or `timeout`
/// passes; `None` when it passed.
async fn poll<T>(
    timeout: Duration,
    mut done: impl AsyncFnMut() -> Result<Option<T>, RealizeError>,
) -> Result<Option<T>, RealizeError> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        if let Some(out) = done().await? {
            return Ok(Some(out));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

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
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let passed = poll(timeout, async || {
        let Some(live) = cluster
            .get(api_version, kind, &key.namespace, &key.name)
            .await?
        else {
            return Ok(None);
        };
        if health::is_ready(&live) {
            return Ok(Some(()));
        }
        if let Some(failed) = health::failure(&live) {
            return Err(RealizeError::GateFailed {
                object: key.to_string(),
                condition: failed,
            });
        }
        tracing::info!(object = %key, waiting_for = condition, progress = health::progress(&live).as_deref().unwrap_or("-"), "waiting");
        Ok(None)
    })
    .await?;
    passed.ok_or_else(|| RealizeError::Unhealthy {
        object: key.to_string(),
        condition: condition.to_owned(),
        timeout,
    })
}

/// Waits until the object `key` no longer exists.
pub async fn gone(
    cluster: &impl ClusterApi,
    key: &ObjectKey,
    timeout: Duration,
) -> Result<(), RealizeError> {
    let passed = poll(timeout, async || {
        let exists = cluster
            .exists(&key.group_kind, &key.namespace, &key.name)
            .await?;
        Ok((!exists).then_some(()))
    })
    .await?;
    passed.ok_or_else(|| RealizeError::Unhealthy {
        object: key.to_string(),
        condition: "deleted".to_owned(),
        timeout,
    })
}
