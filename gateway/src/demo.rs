//! `fedgate demo`: a built-in federation server to stand behind the gateway, and the embedded
//! configuration that puts the two together, so a newcomer can curl the proxy and read
//! `/metrics` seconds after building. `fedgate demo-upstream` runs the server alone.
//!
//! The server answers like a small ActivityPub instance: WebFinger, NodeInfo, actor documents
//! at `/users/NAME`, inboxes that accept POSTs, and `/health`; `/status/NNN` answers with
//! status NNN (200 to 599), to produce upstream errors on demand.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::json;
use tokio::net::TcpListener;

use crate::config::{self, Config, ConfigError};

/// The embedded demo configuration; `{LISTEN}`, `{ADMIN}` and `{UPSTREAM}` are filled in.
pub const DEMO_CONFIG: &str = include_str!("demo.toml");

/// Builds the demo configuration for the given addresses.
pub fn config(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
) -> Result<Config, ConfigError> {
    let text = DEMO_CONFIG
        .replace("{LISTEN}", &listen.to_string())
        .replace("{ADMIN}", &admin.to_string())
        .replace("{UPSTREAM}", &upstream.to_string());
    config::from_str(&text, Path::new("."))
}

/// Binds the demo federation server and serves it in the background.
pub async fn spawn_upstream(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(
                        move |req| async move { Ok::<_, Infallible>(answer(local, req).await) },
                    );
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(local)
}

fn host_of(req: &Request<Incoming>, fallback: SocketAddr) -> String {
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| fallback.to_string())
}

async fn answer(local: SocketAddr, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let host = host_of(&req, local);
    let base = format!("http://{host}");
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, ["health"]) => {
            json_response(StatusCode::OK, "application/json", &json!({"status": "ok"}))
        }
        (&Method::GET, [".well-known", "nodeinfo"]) => json_response(
            StatusCode::OK,
            "application/json",
            &json!({"links": [{
                "rel": "http://nodeinfo.diaspora.software/ns/schema/2.1",
                "href": format!("{base}/nodeinfo/2.1"),
            }]}),
        ),
        (&Method::GET, ["nodeinfo", "2.1"]) => json_response(
            StatusCode::OK,
            "application/json; profile=\"http://nodeinfo.diaspora.software/ns/schema/2.1#\"",
            &json!({
                "version": "2.1",
                "software": {"name": "fedgate-demo", "version": env!("CARGO_PKG_VERSION")},
                "protocols": ["activitypub"],
                "services": {"inbound": [], "outbound": []},
                "openRegistrations": false,
                "usage": {"users": {"total": 2}, "localPosts": 0},
                "metadata": {},
            }),
        ),
        (&Method::GET, [".well-known", "webfinger"]) => {
            let resource = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("resource="))
                    .map(str::to_string)
            });
            match resource
                .as_deref()
                .and_then(|r| r.strip_prefix("acct:"))
                .and_then(|a| a.split('@').next())
            {
                Some(user) if !user.is_empty() => json_response(
                    StatusCode::OK,
                    "application/jrd+json",
                    &json!({
                        "subject": format!("acct:{user}@{host}"),
                        "links": [{"rel": "self", "type": "application/activity+json", "href": format!("{base}/users/{user}")}],
                    }),
                ),
                _ => plain(
                    StatusCode::BAD_REQUEST,
                    "resource=acct:user@host required\n",
                ),
            }
        }
        (&Method::GET, ["users", user]) => json_response(
            StatusCode::OK,
            "application/activity+json",
            &actor(&base, user),
        ),
        (&Method::POST, ["users", _, "inbox"]) | (&Method::POST, ["inbox"]) => {
            let is_json = req
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|ct| ct.contains("json"));
            match req.into_body().collect().await.map(|b| b.to_bytes()) {
                Ok(body)
                    if is_json && serde_json::from_slice::<serde_json::Value>(&body).is_ok() =>
                {
                    plain(StatusCode::ACCEPTED, "")
                }
                Ok(_) => plain(
                    StatusCode::BAD_REQUEST,
                    "expected an ActivityPub JSON document\n",
                ),
                Err(_) => plain(StatusCode::BAD_REQUEST, "unreadable body\n"),
            }
        }
        (_, ["users", _, "inbox"]) | (_, ["inbox"]) => {
            plain(StatusCode::METHOD_NOT_ALLOWED, "POST only\n")
        }
        // Any status on demand, to try health checks and plugins on upstream failures
        // (`curl http://127.0.0.1:8080/status/503`).
        (_, ["status", code]) => {
            match code.parse::<u16>().ok().filter(|c| (200..600).contains(c)) {
                Some(c) => plain(
                    StatusCode::from_u16(c).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    "answered with the status the path asked for\n",
                ),
                None => plain(StatusCode::BAD_REQUEST, "/status/NNN takes 200 to 599\n"),
            }
        }
        _ => plain(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn actor(base: &str, user: &str) -> serde_json::Value {
    let id = format!("{base}/users/{user}");
    json!({
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
        "id": id,
        "type": "Person",
        "preferredUsername": user,
        "inbox": format!("{id}/inbox"),
        "outbox": format!("{id}/outbox"),
        "followers": format!("{id}/followers"),
        "following": format!("{id}/following"),
        "endpoints": {"sharedInbox": format!("{base}/inbox")},
        "publicKey": {
            "id": format!("{id}#main-key"),
            "owner": id,
            "publicKeyPem": DEMO_PUBLIC_KEY,
        },
    })
}

/// A fixed public key for demo actors; the demo never signs anything with it.
const DEMO_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n-----END PUBLIC KEY-----\n";

fn json_response(
    status: StatusCode,
    content_type: &'static str,
    v: &serde_json::Value,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
