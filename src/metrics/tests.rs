use super::*;

#[test]
fn concurrent_scrapes_each_see_a_node_s_requests_once() {
    let config = crate::config::parse(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[nodes]]\nname = \"web1\"\naddress = \"127.0.0.1:8069\"\nrole = \"interactive\"\nworkers = 4\n",
    )
    .expect("config");
    let topology = Topology::new(&config);
    let _lease = topology
        .interactive
        .try_acquire_node(0)
        .expect("a free worker");
    let metrics = Metrics::new();
    let seen: Vec<String> = std::thread::scope(|s| {
        let scrapes: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    (0..300)
                        .filter_map(|_| {
                            let text = metrics.render(&topology);
                            let line = text
                                .lines()
                                .find(|l| l.starts_with("odoo_edge_node_in_flight{"))
                                .map(str::to_owned);
                            (line.as_deref().and_then(|l| l.rsplit(' ').next()) != Some("1"))
                                .then(|| format!("{line:?}"))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        scrapes
            .into_iter()
            .flat_map(|t| t.join().expect("scrape thread"))
            .collect()
    });
    assert!(
        seen.is_empty(),
        "one request in flight; {} of 1200 scrapes said otherwise, such as {:?}",
        seen.len(),
        seen.first()
    );
}

#[tokio::test]
async fn queue_depth_counts_the_waiters_of_a_cluster_without_gevent_nodes() {
    let config = crate::config::parse(
        "[[listeners]]\naddress = \"127.0.0.1:0\"\n\n\
         [[nodes]]\nname = \"web1\"\naddress = \"127.0.0.1:8069\"\nrole = \"interactive\"\nworkers = 1\n",
    )
    .expect("config");
    let topology = Topology::new(&config);
    assert!(topology.bus_on_interactive);
    let _busy = topology
        .interactive
        .try_acquire_node(0)
        .expect("a free worker");
    let pool = topology.interactive.clone();
    let waiter = tokio::spawn(async move { pool.acquire(&[]).await.is_ok() });
    for _ in 0..1000 {
        if topology.interactive.queued() == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(topology.interactive.queued(), 1);
    let text = Metrics::new().render(&topology);
    let depth: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("odoo_edge_queue_depth{"))
        .collect();
    assert_eq!(depth, ["odoo_edge_queue_depth{pool=\"interactive\"} 1"]);
    waiter.abort();
}
