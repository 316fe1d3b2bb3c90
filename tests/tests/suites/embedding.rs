//! A program that embeds the gateway passes its own Prometheus registry: the gateway's
//! families are registered there beside the program's own, and a name already taken is
//! refused at start.

use fedgate_tests::*;

fn config(up: &TestUpstream) -> fedgate::config::Config {
    let text = format!(
        "{HEAD}\n{}\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n",
        upstream_block("app", &[up.url()], "")
    );
    fedgate::config::from_str(&text, std::path::Path::new(".")).expect("valid config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_registers_its_families_on_the_registry_it_is_given() {
    let up = TestUpstream::start("a").await;
    let registry = prometheus::Registry::new();
    let own =
        prometheus::IntCounter::new("embedder_jobs_total", "The embedding program's own.").unwrap();
    registry.register(Box::new(own.clone())).unwrap();
    own.inc_by(5);

    let gw = fedgate::Gateway::start_with_registry(config(&up), None, registry.clone())
        .await
        .expect("gateway starts");
    let addr = gw.listener_addrs()[0].1;
    for _ in 0..3 {
        let (status, _, _) = send(get(&format!("http://{addr}/users/alice"))).await;
        assert_eq!(status, 200);
    }
    // The program's registry holds the gateway's families with their values...
    let families = registry.gather();
    let requests: f64 = families
        .iter()
        .filter(|f| f.name() == "fedgate_requests_total")
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value())
        .sum();
    assert_eq!(requests, 3.0);
    // ... and the admin endpoint serves the program's own family too.
    let (_, _, body) = send(get(&format!("http://{}/metrics", gw.admin_addr()))).await;
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(metric(&text, "embedder_jobs_total", &[]), Some(5.0));
    assert!(gw.shutdown().await);

    // A registry where a gateway family's name is taken is refused, naming it.
    let clash = prometheus::Registry::new();
    clash
        .register(Box::new(
            prometheus::IntCounter::new("fedgate_config_reloads_total", "taken").unwrap(),
        ))
        .unwrap();
    let err = fedgate::Gateway::start_with_registry(config(&up), None, clash)
        .await
        .expect_err("a taken name is refused");
    assert!(
        err.contains("fedgate_config_reloads_total") || err.contains("Duplicate"),
        "{err}"
    );
}
