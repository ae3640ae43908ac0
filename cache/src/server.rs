//! `kiln cache serve`: GET, HEAD and PUT over the cache layout, on a directory or any
//! `object_store` backend (axum on tokio).
//!
//! - Only the layout's three key shapes are served; every other path is 404.
//! - PUT needs the push token (bearer, compared in constant time); reads need the read token
//!   when one is set.
//! - Uploads are checked as a pulling runner checks them, so the server never stores garbage:
//!   an archive must unpack under the store's limits and hash to its key; an entry must parse,
//!   hash to its key and point at an archive the server already has (archive first, entry
//!   last); the info file must name this format. Bodies above the upload limit are refused
//!   (413) while they stream in.
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
            if !authorized(request.headers(), config.read_token.as_deref()) {
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
            let body =
                match axum::body::to_bytes(request.into_body(), config.max_upload_bytes).await {
                    Ok(b) => b,
                    Err(_) => {
                        return status(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "the upload exceeds the limit",
                        )
                    }
                };
            if let Err(reason) = check_upload(config, key, &body).await {
                return status(StatusCode::UNPROCESSABLE_ENTITY, &reason);
            }
            match config.store.put(&location, PutPayload::from(body)).await {
                Ok(_) => status(StatusCode::CREATED, "stored"),
                Err(e) => {
                    tracing::error!("storing {location} failed: {e}");
                    status(StatusCode::INTERNAL_SERVER_ERROR, "storing failed")
                }
            }
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

/// What a pulling runner would refuse, the server refuses to store.
async fn check_upload(config: &ServerConfig, key: Key, body: &[u8]) -> Result<(), String> {
    match key {
        Key::Info => {
            let v: serde_json::Value =
                serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
            if v["format"] != layout::FORMAT {
                return Err(format!("the info file must name format {}", layout::FORMAT));
            }
            Ok(())
        }
        Key::Archive(out) => {
            let body = body.to_vec();
            tokio::task::spawn_blocking(move || crate::verified_tree(&body, &out).map(drop))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|reason| format!("archive refused: {reason}"))
        }
        Key::Action(drv) => {
            let entry =
                ActionEntry::parse(body, &drv).map_err(|r| format!("entry refused: {r}"))?;
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
