//! The proxy path end to end: body integrity, byte-exact forwarding of what federation
//! signatures cover, hop-by-hop stripping, forwarding headers, routing, balancing, upstream
//! failures, HTTP/2 clients and WebSocket upgrades.

use std::time::{Duration, Instant};

use fedgate_tests::*;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use sha2::{Digest, Sha256};

fn one_route(up: &TestUpstream, extra: &str) -> String {
    format!(
        "{}\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], extra)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_and_post_bodies_arrive_intact() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up, "")).await;

    let (status, headers, body) = send(get(&gw.url("/bytes/300000"))).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-upstream"], "a");
    assert_eq!(hex::encode(Sha256::digest(&body)), pattern_sha256(300_000));

    let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let want = format!(
        "{} {}",
        payload.len(),
        hex::encode(Sha256::digest(&payload))
    );
    let (status, _, body) = send(post(&gw.url("/hash"), payload.clone())).await;
    assert_eq!(status, 200);
    assert_eq!(body, want.as_bytes());

    // Streamed (chunked) upload, 8 MiB.
    let req = Request::post(gw.url("/hash"))
        .body(pattern_stream(8 << 20))
        .unwrap();
    let (status, _, body) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!("{} {}", 8 << 20, pattern_sha256(8 << 20)).as_bytes()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_request_parts_reach_the_upstream_byte_exact() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up, "")).await;

    let body = br#"{"@context":"https://www.w3.org/ns/activitystreams","type":"Create","actor":"https://remote.example/users/bob"}"#;
    let target = "/users/alice/inbox?a=%2Fb&c=d%20e&empty=&x=%E2%9C%93";
    let req = Request::post(gw.url(target))
        .header("host", "Social.Example:8443")
        .header("date", "Tue, 07 Jun 2022 20:51:35 GMT")
        .header("digest", "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=")
        .header("signature", "keyId=\"https://remote.example/users/bob#main-key\",headers=\"(request-target) host date digest\",signature=\"abc=\"")
        .header("content-type", "application/activity+json")
        .body(http_body_util::BodyExt::boxed(http_body_util::BodyExt::map_err(
            http_body_util::Full::new(bytes::Bytes::from_static(body)),
            |never| match never {},
        )))
        .unwrap();
    let (status, _, _) = send(req).await;
    assert_eq!(status, 200);
    let seen = up.last();
    assert_eq!(seen.target, target);
    assert_eq!(seen.headers["host"], "Social.Example:8443");
    assert_eq!(seen.headers["date"], "Tue, 07 Jun 2022 20:51:35 GMT");
    assert_eq!(
        seen.headers["digest"],
        "SHA-256=X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE="
    );
    assert!(seen.headers["signature"]
        .to_str()
        .unwrap()
        .starts_with("keyId="));
    assert_eq!(seen.headers["content-type"], "application/activity+json");
    assert_eq!(seen.body_sha256, hex::encode(Sha256::digest(body)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed_and_forwarding_headers_set() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&format!(
        "[forwarding]\nclient_headers = \"both\"\nvia = \"edge\"\n{}",
        one_route(&up, "")
    ))
    .await;
    let req = Request::get(gw.url("/x"))
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("te", "gzip")
        .header("proxy-authorization", "Basic Zm9vOmJhcg==")
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-request-id", "client-id-123")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let (status, headers, _) = send(req).await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-request-id"], "client-id-123");
    assert_eq!(headers["via"], "1.1 edge");
    let h = up.last().headers;
    for gone in [
        "connection",
        "x-hop",
        "keep-alive",
        "te",
        "proxy-authorization",
    ] {
        assert!(!h.contains_key(gone), "{gone} was forwarded");
    }
    assert_eq!(h["x-end-to-end"], "kept");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(
        h["forwarded"],
        format!("for=127.0.0.1;proto=http;host=\"{}\"", gw.addr)
    );
    assert_eq!(h["via"], "1.1 edge");
    assert_eq!(h["x-request-id"], "client-id-123");
    assert_eq!(
        h["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    // Without ids, the gateway creates them.
    send(get(&gw.url("/y"))).await;
    let h = up.last().headers;
    assert_eq!(h["x-request-id"].len(), 36);
    let tp = h["traceparent"].to_str().unwrap();
    assert!(tp.starts_with("00-") && tp.len() == 55, "{tp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_in_order_and_unmatched_requests_get_404() {
    let inbox = TestUpstream::start("inbox").await;
    let web = TestUpstream::start("web").await;
    let gw = TestGateway::start(&format!(
        r#"{}{}
[[routes]]
name = "inbox"
hosts = ["social.example"]
path_prefix = "/inbox"
methods = ["POST"]
upstream = "inbox"
[[routes]]
name = "web"
hosts = ["*.social.example"]
upstream = "web"
"#,
        upstream_block("inbox", &[inbox.url()], ""),
        upstream_block("web", &[web.url()], "")
    ))
    .await;
    let with_host = |mut r: Request<Body>, host: &str| {
        r.headers_mut().insert("host", host.parse().unwrap());
        r
    };
    let (s, h, _) = send(with_host(post(&gw.url("/inbox"), "{}"), "social.example")).await;
    assert_eq!(
        (s.as_u16(), h["x-upstream"].to_str().unwrap()),
        (200, "inbox")
    );
    let (s, h, _) = send(with_host(get(&gw.url("/@alice")), "www.social.example")).await;
    assert_eq!(
        (s.as_u16(), h["x-upstream"].to_str().unwrap()),
        (200, "web")
    );
    let (s, _, body) = send(with_host(get(&gw.url("/inbox")), "social.example")).await;
    assert_eq!(s, 404);
    assert_eq!(&body[..], b"no route\n");
    let (s, _, _) = send(with_host(get(&gw.url("/")), "other.example")).await;
    assert_eq!(s, 404);
    assert_eq!(inbox.hits() + web.hits(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly_and_least_in_flight_avoids_busy_endpoints() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    let urls: Vec<String> = ups.iter().map(|u| u.url()).collect();
    let gw = TestGateway::start(&format!(
        "{}{}\n[[routes]]\nname = \"rr\"\npath_prefix = \"/rr\"\nupstream = \"rr\"\n[[routes]]\nname = \"lif\"\nupstream = \"lif\"\n",
        upstream_block("rr", &urls, ""),
        upstream_block("lif", &urls, "balance = \"least_in_flight\"")
    ))
    .await;
    for _ in 0..30 {
        assert_eq!(send(get(&gw.url("/rr"))).await.0, 200);
    }
    for u in &ups {
        assert_eq!(
            u.hits(),
            10,
            "round robin gave {} {} requests",
            u.name,
            u.hits()
        );
    }

    // Two slow requests occupy two endpoints; quick ones must go to the third.
    let slow: Vec<_> = (0..2)
        .map(|_| tokio::spawn(send(get(&gw.url("/slow/800")))))
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut quick_to = Vec::new();
    for _ in 0..5 {
        let (_, h, _) = send(get(&gw.url("/quick"))).await;
        quick_to.push(h["x-upstream"].to_str().unwrap().to_string());
    }
    let mut slow_to = Vec::new();
    for s in slow {
        slow_to.push(
            s.await.unwrap().1["x-upstream"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_ne!(
        slow_to[0], slow_to[1],
        "the second slow request should avoid the busy endpoint"
    );
    for q in &quick_to {
        assert!(
            !slow_to.contains(q),
            "quick request went to busy {q}: slow={slow_to:?} quick={quick_to:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_is_502_and_slow_upstream_is_504() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let slow = TestUpstream::start("slow").await;
    let gw = TestGateway::start(&format!(
        "{}{}\n[[routes]]\nname = \"dead\"\npath_prefix = \"/dead\"\nupstream = \"dead\"\n[[routes]]\nname = \"slow\"\nupstream = \"slow\"\ntimeout = \"300ms\"\n",
        upstream_block("dead", &[dead], "connect_timeout = \"1s\""),
        upstream_block("slow", &[slow.url()], "")
    ))
    .await;
    let (s, _, body) = send(get(&gw.url("/dead"))).await;
    assert_eq!(s, 502);
    assert_eq!(&body[..], b"bad gateway\n");

    let started = Instant::now();
    let (s, _, body) = send(get(&gw.url("/slow/3000"))).await;
    assert_eq!(s, 504);
    assert_eq!(&body[..], b"gateway timeout\n");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "took {:?}",
        started.elapsed()
    );

    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "dead"), ("kind", "connect")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "slow"), ("kind", "timeout")]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &m,
            "fedgate_upstream_errors_total",
            &[("upstream", "slow"), ("kind", "connect")]
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_reach_http1_upstreams() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&one_route(&up, "")).await;
    let payload = vec![42u8; 100_000];
    let want = format!(
        "{} {}",
        payload.len(),
        hex::encode(Sha256::digest(&payload))
    );
    let (s, h, body) = send_with(&h2_client(), post(&gw.url("/hash?x=1"), payload)).await;
    assert_eq!(s, 200);
    assert_eq!(body, want.as_bytes());
    // Via names the protocol each message was received with: HTTP/2 from the client,
    // HTTP/1.1 from the upstream.
    assert_eq!(h["via"], "1.1 fedgate");
    let seen = up.last();
    assert_eq!(seen.headers["via"], "2 fedgate");
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(seen.target, "/hash?x=1");
    assert_eq!(seen.headers["host"], gw.addr.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let up = TestUpstream::start("ws").await;
    let gw = TestGateway::start(&one_route(&up, "")).await;
    let (mut ws, resp) = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect("websocket handshake through the proxy");
    assert_eq!(resp.status(), 101);
    for i in 0..5 {
        let msg = format!("hello {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::text(msg.clone()))
            .await
            .unwrap();
        let echo = ws.next().await.unwrap().unwrap();
        assert_eq!(echo.into_text().unwrap().as_str(), msg);
    }
    ws.close(None).await.unwrap();
    let m = gw.metrics().await;
    assert_eq!(
        metric(
            &m,
            "fedgate_requests_total",
            &[
                ("route", "all"),
                ("upstream", "app"),
                ("method", "GET"),
                ("status", "101")
            ]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstreams_get_the_endpoint_authority_without_preserve_host() {
    let up = TestUpstream::start("h2").await;
    let gw = TestGateway::start(&format!(
        "[forwarding]\npreserve_host = false\n{}",
        one_route(&up, "protocol = \"http2\"")
    ))
    .await;
    let (s, _, _) = send(get(&gw.url("/status/204"))).await;
    assert_eq!(s, 204);
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(
        seen.authority.as_deref(),
        Some(up.addr.to_string().as_str())
    );
    assert!(seen.headers.get("host").is_none(), "{:?}", seen.headers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstreams_are_spoken_to_by_prior_knowledge() {
    let up = TestUpstream::start("h2").await;
    let gw = TestGateway::start(&one_route(&up, "protocol = \"http2\"")).await;
    let payload = vec![9u8; 70_000];
    let want = format!(
        "{} {}",
        payload.len(),
        hex::encode(Sha256::digest(&payload))
    );
    for _ in 0..3 {
        let (s, _, body) = send(post(&gw.url("/hash?q=1"), payload.clone())).await;
        assert_eq!(s, 200);
        assert_eq!(body, want.as_bytes());
    }
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.target, "/hash?q=1");
    // The client's Host travels as `:authority` (RFC 9113 §8.3.1), not beside a different
    // one: the endpoint is what is dialled, not what is named.
    assert_eq!(
        seen.authority.as_deref(),
        Some(gw.addr.to_string().as_str())
    );
    assert!(seen.headers.get("host").is_none(), "{:?}", seen.headers);
    // One multiplexed connection carries all three requests.
    let m = gw.metrics().await;
    let open = metric(
        &m,
        "fedgate_upstream_connections",
        &[("upstream", "app"), ("state", "idle")],
    )
    .unwrap()
        + metric(
            &m,
            "fedgate_upstream_connections",
            &[("upstream", "app"), ("state", "active")],
        )
        .unwrap();
    assert_eq!(open, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_on_a_route_to_an_http2_upstream_are_answered_501() {
    let up = TestUpstream::start("h2").await;
    let gw = TestGateway::start(&one_route(&up, "protocol = \"http2\"")).await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/ws", gw.addr))
        .await
        .expect_err("HTTP/2 cannot carry an HTTP/1.1 upgrade");
    let tokio_tungstenite::tungstenite::Error::Http(resp) = err else {
        panic!("expected the gateway's HTTP answer, got {err:?}");
    };
    assert_eq!(resp.status(), 501);
    assert_eq!(
        resp.body().as_deref(),
        Some(&b"upgrade not supported on this route\n"[..])
    );
    assert!(resp.headers().contains_key("x-request-id"));
    // The upstream was never asked; ordinary requests on the route still go through.
    assert_eq!(up.hits(), 0);
    let (s, _, body) = send(get(&gw.url("/plain"))).await;
    assert_eq!(s, 200);
    assert_eq!(body, "upstream h2");
    let m = wait_for_metric(
        &gw.admin.to_string(),
        "fedgate_requests_total",
        &[
            ("route", "all"),
            ("upstream", "app"),
            ("method", "GET"),
            ("status", "501"),
        ],
        1.0,
        Duration::from_secs(10),
    )
    .await;
    for kind in ["connect", "timeout", "reset", "protocol"] {
        assert_eq!(
            metric(
                &m,
                "fedgate_upstream_errors_total",
                &[("upstream", "app"), ("kind", kind)]
            ),
            Some(0.0),
            "{kind}"
        );
    }
}
