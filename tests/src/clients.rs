//! Clients: plain HTTP/1.1 and HTTP/2 clients and request builders, with a bound on how
//! long an answer may take.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::OnceLock;
use std::time::Duration;

use crate::*;

type PlainClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// A shared HTTP/1.1 keep-alive client.
pub fn client() -> PlainClient {
    static C: OnceLock<PlainClient> = OnceLock::new();
    C.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
        .clone()
}

/// An HTTP/2 (prior knowledge) client.
pub fn h2_client() -> PlainClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A `GET` of `url` with no body.
pub fn get(url: &str) -> Request<Body> {
    Request::get(url).body(empty()).unwrap()
}

/// A `POST` to `url` with `body`, sent whole.
pub fn post(url: &str, body: impl Into<Bytes>) -> Request<Body> {
    Request::post(url)
        .body(
            Full::new(body.into())
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

/// A request with `headers` (as the signers return them) and a body.
pub fn request(method: &str, url: &str, headers: &[(String, String)], body: &str) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed(),
    )
    .unwrap()
}

/// Sends with the shared client and collects the response.
pub async fn send(req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    send_with(&client(), req).await
}

/// How long a test waits for a whole answer before it fails, naming the request: a gateway
/// that never answers fails its test instead of stalling the suite.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Sends with `c` and collects the response, within [`ANSWER_WITHIN`].
pub async fn send_with(c: &PlainClient, req: Request<Body>) -> (StatusCode, HeaderMap, Bytes) {
    let what = format!("{} {}", req.method(), req.uri());
    let exchange = async {
        let resp = c.request(req).await.expect("request failed");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, body)
    };
    tokio::time::timeout(ANSWER_WITHIN, exchange)
        .await
        .unwrap_or_else(|_| panic!("no whole answer to {what} within {ANSWER_WITHIN:?}"))
}
