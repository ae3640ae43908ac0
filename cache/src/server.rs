//! `kiln cache serve`: GET, HEAD and PUT over the cache layout, on a directory or any
//! `object_store` backend (axum on tokio).
//!
//! - Only the layout's three key shapes are served; every other path is 404.
//! - PUT needs the push token (bearer, compared in constant time); reads need the read token
//!   when one is set.
//! - Uploads are checked as a pulling runner checks them, so the server never stores garbage:
//!   an archive must unpack under the store's limits and hash to its key; an entry must parse,
//!   hash to its key and point at an archive the server already has (archive first, entry
//!   last); the info file must name this format. Bodies stream to a temporary file (memory
//!   holds a chunk, never an upload), are refused (413) as soon as they pass the upload limit,
//!   are checked from disk, and are stored from disk in parts.
//! - The cache is append-only: what is stored is never replaced. A PUT of a key that exists
//!   answers 200 when its bytes are the same and 409 when they differ (first writer wins), so
//!   a push token cannot swap a signed entry for an unsigned one. Entries are created with a
//!   conditional write, so two racing uploads cannot both win.
//! - Reads need the read token when one is set; the push token also reads.
//! - Writes are atomic (the file backend writes a temp file and renames it).
//! - Downloads stream from the backend. One access-log line per request on stderr.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use subtle::ConstantTimeEq;

use crate::entry::ActionEntry;
use crate::layout::{self, Key};

/// How the server runs.
#[derive(Clone)]
pub struct ServerConfig {
    /// Where the layout lives.
    pub store: Arc<dyn ObjectStore>,
    /// The token PUT needs. Without one, the server is read-only.
    pub push_token: Option<String>,
    /// The token reads need, if any.
    pub read_token: Option<String>,
    /// The largest upload accepted, in bytes.
    pub max_upload_bytes: usize,
}

/// The router (for tests and embedding).
pub fn router(config: ServerConfig) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .with_state(Arc::new(config))
}

/// Writes the info file if the backend has none, then serves on `listener` until `shutdown`
/// resolves; requests in flight finish.
pub async fn serve(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let info = StorePath::from(layout::INFO);
    if config.store.head(&info).await.is_err() {
        config
            .store
            .put(&info, PutPayload::from(layout::info_body().into_bytes()))
            .await
            .map_err(std::io::Error::other)?;
    }
    use axum::serve::ListenerExt as _;
    // Without TCP_NODELAY a response written as head and body waits out the client's delayed
    // ACK (about 40 ms per request on Linux).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(config))
        .with_graceful_shutdown(shutdown)
        .await
}

fn authorized(headers: &HeaderMap, token: Option<&str>) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

fn status(code: StatusCode, message: &str) -> Response {
    (code, format!("{message}\n")).into_response()
}

async fn handle(State(config): State<Arc<ServerConfig>>, request: Request) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = route(&config, request).await;
    tracing::info!(
        target: "kiln::cache::access",
        "{method} {path} {} {:.1}ms",
        response.status().as_u16(),
        start.elapsed().as_secs_f64() * 1000.0
    );
    response
}

async fn route(config: &ServerConfig, request: Request) -> Response {
    let Some(key) = layout::parse_request_path(request.uri().path()) else {
        return status(StatusCode::NOT_FOUND, "not a kiln cache path");
    };
    let location = StorePath::from(key.path());
    match *request.method() {
        Method::GET | Method::HEAD => {
            // The push token reads too: a pushing runner needs one token, not two.
            let reads = authorized(request.headers(), config.read_token.as_deref())
                || (config.read_token.is_some()
                    && config.push_token.is_some()
                    && authorized(request.headers(), config.push_token.as_deref()));
            if !reads {
                return status(StatusCode::UNAUTHORIZED, "a read token is required");
            }
            read(config, &location, request.method() == Method::HEAD).await
        }
        Method::PUT => {
            if config.push_token.is_none() {
                return status(StatusCode::FORBIDDEN, "this server is read-only");
            }
            if !authorized(request.headers(), config.push_token.as_deref()) {
                return status(
                    StatusCode::UNAUTHORIZED,
                    "the push token is missing or wrong",
                );
            }
            put(config, key, &location, request.into_body()).await
        }
        _ => status(StatusCode::METHOD_NOT_ALLOWED, "GET, HEAD or PUT"),
    }
}

async fn read(config: &ServerConfig, location: &StorePath, head_only: bool) -> Response {
    let result = if head_only {
        config.store.head(location).await.map(|meta| (meta, None))
    } else {
        match config.store.get(location).await {
            Ok(r) => Ok((r.meta.clone(), Some(r.into_stream()))),
            Err(e) => Err(e),
        }
    };
    match result {
        Ok((meta, stream)) => {
            let body = match stream {
                Some(s) => Body::from_stream(s.map(|r| r.map_err(std::io::Error::other))),
                None => Body::empty(),
            };
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_LENGTH, meta.size)
                .header(header::CONTENT_TYPE, "application/octet-stream")
                .body(body)
                .expect("a valid response")
        }
        Err(object_store::Error::NotFound { .. }) => status(StatusCode::NOT_FOUND, "not found"),
        Err(e) => {
            tracing::error!("reading {location} failed: {e}");
            status(StatusCode::INTERNAL_SERVER_ERROR, "reading failed")
        }
    }
}

/// The most an entry or the info file may be: they are a few hundred bytes.
const MAX_SMALL_UPLOAD: u64 = 1 << 20;

/// A PUT: the body streamed to a temporary file (refused once past the limit), checked from
/// disk, then stored unless the key exists (append-only: same bytes 200, other bytes 409).
async fn put(config: &ServerConfig, key: Key, location: &StorePath, body: Body) -> Response {
    let limit = match key {
        Key::Archive(_) => config.max_upload_bytes as u64,
        _ => MAX_SMALL_UPLOAD.min(config.max_upload_bytes as u64),
    };
    let file = match receive(body, limit).await {
        Ok(Some(f)) => f,
        Ok(None) => {
            return status(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the upload exceeds the limit",
            )
        }
        Err(e) => {
            tracing::error!("receiving {location} failed: {e}");
            return status(StatusCode::BAD_REQUEST, "the upload could not be received");
        }
    };
    if let Err(reason) = check_upload(config, key, file.path()).await {
        return status(StatusCode::UNPROCESSABLE_ENTITY, &reason);
    }
    // Append-only: an object that exists is never replaced.
    match config.store.head(location).await {
        Ok(_) => {
            return match same_bytes(config, location, file.path()).await {
                Ok(true) => status(StatusCode::OK, "already stored, the same bytes"),
                Ok(false) => status(
                    StatusCode::CONFLICT,
                    "already stored with other bytes: a cache entry is never replaced",
                ),
                Err(e) => {
                    tracing::error!("comparing with {location} failed: {e}");
                    status(StatusCode::INTERNAL_SERVER_ERROR, "comparing failed")
                }
            }
        }
        Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::error!("checking {location} failed: {e}");
            return status(StatusCode::INTERNAL_SERVER_ERROR, "checking failed");
        }
    }
    match store_file(config, key, location, file.path()).await {
        Ok(()) => status(StatusCode::CREATED, "stored"),
        // Another upload of the same key won the race: the first writer's bytes stay.
        Err(object_store::Error::AlreadyExists { .. }) => {
            match same_bytes(config, location, file.path()).await {
                Ok(true) => status(StatusCode::OK, "already stored, the same bytes"),
                _ => status(
                    StatusCode::CONFLICT,
                    "already stored with other bytes: a cache entry is never replaced",
                ),
            }
        }
        Err(e) => {
            tracing::error!("storing {location} failed: {e}");
            status(StatusCode::INTERNAL_SERVER_ERROR, "storing failed")
        }
    }
}

/// The body in a temporary file; `None` once it passes `limit` (read no further).
async fn receive(body: Body, limit: u64) -> std::io::Result<Option<tempfile::NamedTempFile>> {
    use std::io::Write as _;
    let file = tempfile::NamedTempFile::new()?;
    let mut out = std::io::BufWriter::new(file.as_file());
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(std::io::Error::other)?;
        received += chunk.len() as u64;
        if received > limit {
            return Ok(None);
        }
        out.write_all(&chunk)?;
    }
    out.flush()?;
    drop(out);
    Ok(Some(file))
}

/// Stores the file at `path` under `location`: an entry or the info file in one conditional
/// write (create only), an archive in parts read from disk.
async fn store_file(
    config: &ServerConfig,
    key: Key,
    location: &StorePath,
    path: &std::path::Path,
) -> Result<(), object_store::Error> {
    let io = |e: std::io::Error| object_store::Error::Generic {
        store: "kiln-cache-server",
        source: Box::new(e),
    };
    if !matches!(key, Key::Archive(_)) {
        let bytes = tokio::fs::read(path).await.map_err(io)?;
        let options = object_store::PutOptions::from(object_store::PutMode::Create);
        return config
            .store
            .put_opts(location, PutPayload::from(bytes), options)
            .await
            .map(drop);
    }
    let upload = config.store.put_multipart(location).await?;
    let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = tokio::io::AsyncReadExt::read(&mut file, &mut buf)
            .await
            .map_err(io)?;
        if n == 0 {
            break;
        }
        parts.wait_for_capacity(2).await?;
        parts.write(&buf[..n]);
    }
    parts.finish().await.map(drop)
}

/// Whether the stored object at `location` has the bytes of the file at `path` (compared by
/// blake3, both read as streams).
async fn same_bytes(
    config: &ServerConfig,
    location: &StorePath,
    path: &std::path::Path,
) -> Result<bool, object_store::Error> {
    let mut stored = blake3::Hasher::new();
    let mut stream = config.store.get(location).await?.into_stream();
    while let Some(chunk) = stream.next().await {
        stored.update(&chunk?);
    }
    let path = path.to_owned();
    let uploaded = tokio::task::spawn_blocking(move || -> std::io::Result<blake3::Hash> {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(path)?)?;
        Ok(h.finalize())
    })
    .await
    .map_err(|e| object_store::Error::Generic {
        store: "kiln-cache-server",
        source: Box::new(e),
    })?
    .map_err(|e| object_store::Error::Generic {
        store: "kiln-cache-server",
        source: Box::new(e),
    })?;
    Ok(stored.finalize() == uploaded)
}

/// What a pulling runner would refuse, the server refuses to store. Read from disk: an
/// archive is checked as a stream.
async fn check_upload(
    config: &ServerConfig,
    key: Key,
    path: &std::path::Path,
) -> Result<(), String> {
    match key {
        Key::Info => {
            let body = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
            let v: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
            if v["format"] != layout::FORMAT {
                return Err(format!("the info file must name format {}", layout::FORMAT));
            }
            Ok(())
        }
        Key::Archive(out) => {
            let path = path.to_owned();
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&path).map_err(|e| e.to_string())?;
                let hashed = kiln_store::archive::hash_stream(
                    std::io::BufReader::new(file),
                    kiln_store::archive::UnpackLimits::default(),
                    |_| false,
                )
                .map_err(|e| kiln_core::error_chain::error_chain(&e))?;
                if hashed.output == out {
                    Ok(())
                } else {
                    Err(format!("its content hashes to {}", hashed.output))
                }
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|reason| format!("archive refused: {reason}"))
        }
        Key::Action(drv) => {
            let body = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
            let entry =
                ActionEntry::parse(&body, &drv).map_err(|r| format!("entry refused: {r}"))?;
            let archive = StorePath::from(Key::Archive(entry.record.output).path());
            match config.store.head(&archive).await {
                Ok(_) => Ok(()),
                Err(_) => Err(format!(
                    "entry refused: its archive `{archive}` is not on this server (push it first)"
                )),
            }
        }
    }
}
