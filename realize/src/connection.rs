//! The HTTP stack under kiln's kube client: kube's own stack (base URI, retries of server
//! errors, authentication, extra headers, timeouts, rustls), on TCP connections with
//! `TCP_NODELAY`.
//!
//! kube's stack leaves Nagle's algorithm on. A TLS 1.3 client writes its `Finished` and then
//! the request in two small segments; the second waits for the server to acknowledge the
//! first, and the server delays that acknowledgement by up to 40 ms. Every new connection's
//! first request paid it: a no-op plan of 5 objects took 100–110 ms on the test control plane,
//! and 20 ms without the delayed acknowledgement. kubectl (Go) sets `TCP_NODELAY` on every
//! connection, and so does this stack.

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube::client::retry::RetryPolicy;
use kube::client::{ClientBuilder, ConfigExt as _, DynBody};
use kube::Config;
use tower::retry::RetryLayer;
use tower::util::BoxService;
use tower::{BoxError, ServiceBuilder, ServiceExt as _};

/// The boxed service stack (kube's `GenericService`, which kube does not export).
pub type Stack =
    BoxService<http::Request<kube::client::Body>, http::Response<Box<DynBody>>, BoxError>;

/// A client builder for `config`, as kube's own `ClientBuilder::try_from` would make it but with
/// `TCP_NODELAY`. A proxy is left to kube's builder, which knows its protocols.
pub fn client_builder(config: Config) -> Result<ClientBuilder<Stack>, kube::Error> {
    if config.proxy_url.is_some() {
        return ClientBuilder::try_from(config);
    }
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let mut connector = TimeoutConnector::new(config.rustls_https_connector_with_connector(tcp)?);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http = hyper_util::client::legacy::Builder::new(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http);
    let service = service.map_response(|response: http::Response<_>| {
        response.map(|body| {
            Box::new(http_body_util::BodyExt::map_err(body, BoxError::from)) as Box<DynBody>
        })
    });
    Ok(ClientBuilder::new(
        BoxService::new(service),
        config.default_namespace,
    ))
}
