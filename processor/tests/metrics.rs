//! `/metrics` shows what an operator watches: lag, batch sizes, append and index latency,
//! failures.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rdkafka::producer::FutureRecord;

use crate::support::events::call_event;
use crate::support::{
    Deployment, metric_value, produce, producer, scrape_metrics, spawn_processor,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_lag_batches_latencies_and_failures() {
    let deployment = Deployment::new(1).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let events: Vec<_> = (0..200)
        .map(|sequence| call_event(&mut rng, sequence, 300))
        .collect();
    let producer = producer();
    produce(&producer, &deployment.topic, &events).await;
    // One message that is not an event: a decode failure.
    producer
        .send(
            FutureRecord::to(&deployment.topic)
                .key("not-an-event")
                .payload("plain text"),
            Duration::from_secs(30),
        )
        .await
        .expect("delivered");
    let (config, port) = deployment.write_config_with("deploy.toml", "", "");
    let mut processor = spawn_processor(&config, &deployment.dir.path().join("p.log"), "info");
    deployment
        .wait_for_logged(201, Duration::from_secs(60))
        .await;

    // The consumer lag comes from librdkafka's statistics, every 5 s; the indexer in the
    // processor follows the log on its own.
    let lag = r#"callproof_processor_consumer_lag_messages{partition="0"}"#;
    let searchable = r#"callproof_indexer_searchable_entries{partition="0"}"#;
    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = scrape_metrics(port);
        let indexed = metric_value(&page, searchable) == Some(201.0);
        if (metric_value(&page, lag).is_some() && indexed) || Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    processor.stop();

    let value = |name: &str| {
        metric_value(&page, name).unwrap_or_else(|| panic!("no {name} in /metrics:\n{page}"))
    };
    assert!(value(lag) >= 0.0);
    // How far search has got, per partition: all of the log, nothing behind.
    assert_eq!(value(searchable), 201.0);
    assert_eq!(
        value(r#"callproof_indexer_lag_entries{partition="0"}"#),
        0.0
    );
    assert_eq!(
        value(r#"callproof_processor_events_total{partition="0"}"#),
        201.0
    );
    assert_eq!(
        value(r#"callproof_processor_log_size{partition="0"}"#),
        201.0
    );
    // Every event went through a batch, and each batch's size was recorded.
    assert_eq!(value("callproof_processor_batch_events_sum"), 201.0);
    assert!(value("callproof_processor_batch_events_count") >= 1.0);
    assert!(value("callproof_processor_batch_bytes_sum") > 200.0 * 600.0);
    for latency in [
        "callproof_processor_append_seconds",
        "callproof_indexer_split_seconds",
        "callproof_processor_siem_publish_seconds",
        "callproof_processor_checkpoint_lag_seconds",
    ] {
        assert!(value(&format!("{latency}_count")) >= 1.0, "{latency}");
        assert!(value(&format!("{latency}{{quantile=\"0.99\"}}")) >= 0.0);
    }
    assert_eq!(
        value(r#"callproof_processor_checkpoint_lag_seconds_count"#),
        201.0
    );
    assert_eq!(
        value(r#"callproof_processor_failures_total{stage="decode"}"#),
        1.0
    );
    // Failures that did not happen are there too, at zero, from the start.
    for absent in [
        r#"callproof_processor_failures_total{stage="store"}"#,
        r#"callproof_processor_failures_total{stage="offset_gap"}"#,
        r#"callproof_processor_failures_total{stage="fenced"}"#,
        "callproof_processor_duplicates_skipped_total",
        "callproof_processor_events_renumbered_total",
    ] {
        assert_eq!(value(absent), 0.0, "{absent}");
    }
}
