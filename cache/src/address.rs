//! Cache addresses: which `object_store` backend serves a URL, and with which settings.
//!
//! - `file:///abs/dir`: a directory (shared file systems, tests, air-gapped transfers);
//! - `http://host/prefix`, `https://…`: kiln's own server or any static server (reads), with a
//!   bearer token for writes;
//! - `s3://bucket/prefix`: AWS S3 or any S3-speaking store; credentials, region and endpoint
//!   from the usual `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP` for MinIO and friends);
//! - `gs://bucket/prefix`, `az://container/prefix`: Google Cloud Storage and Azure Blob, with
//!   their `GOOGLE_*` / `AZURE_*` variables.

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

use crate::error::CacheError;
use crate::keys::PublicKey;

/// How a remote cache is reached.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Public keys whose signatures are trusted; with none, entries are not checked for signatures.
    pub trusted: Vec<PublicKey>,
    /// A bearer token for `http(s)://` caches.
    pub token: Option<String>,
    /// Per-request timeout (connect, and the whole request).
    pub timeout: Duration,
    /// Concurrent requests.
    pub concurrency: usize,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            trusted: Vec::new(),
            token: None,
            timeout: Duration::from_secs(10),
            concurrency: 64,
        }
    }
}

/// The address without credentials (`user:password@` removed), for messages.
pub fn redacted(address: &str) -> String {
    match Url::parse(address) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => address.to_owned(),
    }
}

/// One quick retry at most: a cache that does not answer costs seconds, never minutes.
fn retry(options: &RemoteOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: std::time::Duration::from_millis(50),
            max_backoff: std::time::Duration::from_millis(200),
            base: 2.0,
        },
        max_retries: 1,
        retry_timeout: options.timeout,
    }
}

fn client_options(options: &RemoteOptions) -> Result<ClientOptions, String> {
    let mut client = ClientOptions::new()
        .with_timeout(options.timeout)
        .with_connect_timeout(options.timeout.min(std::time::Duration::from_secs(3)))
        .with_allow_http(true);
    if let Some(token) = &options.token {
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| "the token holds characters a header cannot".to_owned())?;
        headers.insert(http::header::AUTHORIZATION, value);
        client = client.with_default_headers(headers);
    }
    Ok(client)
}

/// The backend of `address` and the prefix (empty, or ending in `/`) its keys live under.
pub fn open_store(
    address: &str,
    options: &RemoteOptions,
) -> Result<(Arc<dyn ObjectStore>, String), CacheError> {
    let refuse = |reason: String| CacheError::Address {
        addr: redacted(address),
        reason,
    };
    install_crypto();
    let url = Url::parse(address).map_err(|e| refuse(e.to_string()))?;
    let prefix = |path: &str| {
        let p = path.trim_matches('/');
        if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        }
    };
    let client = client_options(options).map_err(refuse)?;
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "file" => {
            let dir = url
                .to_file_path()
                .map_err(|()| refuse("a file address needs an absolute path".into()))?;
            std::fs::create_dir_all(&dir).map_err(|e| refuse(e.to_string()))?;
            let fs = LocalFileSystem::new_with_prefix(&dir)
                .map_err(|e| refuse(e.to_string()))?
                .with_automatic_cleanup(true);
            return Ok((Arc::new(fs), String::new()));
        }
        "http" | "https" => {
            let mut base = url.clone();
            base.set_path("");
            let store = HttpBuilder::new()
                .with_url(base.as_str().trim_end_matches('/'))
                .with_client_options(client)
                .with_retry(retry(options))
                .build()
                .map_err(|e| refuse(e.to_string()))?;
            Arc::new(store)
        }
        "s3" => Arc::new(
            AmazonS3Builder::from_env()
                .with_url(address)
                .with_client_options(client)
                .with_retry(retry(options))
                .build()
                .map_err(|e| refuse(e.to_string()))?,
        ),
        "gs" => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(address)
                .with_client_options(client)
                .with_retry(retry(options))
                .build()
                .map_err(|e| refuse(e.to_string()))?,
        ),
        "az" => Arc::new(
            MicrosoftAzureBuilder::from_env()
                .with_url(address)
                .with_client_options(client)
                .with_retry(retry(options))
                .build()
                .map_err(|e| refuse(e.to_string()))?,
        ),
        other => {
            return Err(refuse(format!(
                "unknown scheme `{other}` (known: file, http, https, s3, gs, az)"
            )))
        }
    };
    Ok((store, prefix(url.path())))
}

/// TLS for `https://` caches uses rustls with ring, as kube does.
fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_pick_backends_and_prefixes() {
        let o = RemoteOptions::default();
        let dir = tempfile::tempdir().unwrap();
        let (_, p) = open_store(&format!("file://{}", dir.path().display()), &o).unwrap();
        assert_eq!(p, "");
        let (_, p) = open_store("http://127.0.0.1:1/kiln/ci", &o).unwrap();
        assert_eq!(p, "kiln/ci/");
        let (_, p) = open_store("http://127.0.0.1:1", &o).unwrap();
        assert_eq!(p, "");
        for bad in ["ftp://x/y", "not a url", "file://relative/path"] {
            assert!(open_store(bad, &o).is_err(), "{bad}");
        }
        assert_eq!(
            redacted("https://user:secret@cache.example/kiln"),
            "https://cache.example/kiln"
        );
    }
}
