//! An event too large for one SIEM record never stops the processor: the log keeps it whole,
//! the SIEM stream gets what fits.

use std::time::Duration;

use callproof_processor::siem::{SIEM_BODY_MAX_BYTES, SIEM_RECORD_MAX_BYTES};
use rand::SeedableRng;
use rdkafka::ClientConfig;
use rdkafka::producer::FutureProducer;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::support::events::call_event;
use crate::support::{
    Deployment, brokers, consume_all_with_python, metric_value, produce, producer, scrape_metrics,
    spawn_processor,
};

fn event_ids(events: &[callproof_schemas::CallEvent]) -> Vec<String> {
    events.iter().map(|event| event.event_id.clone()).collect()
}

/// The SIEM records by event id (`metadata.uid`); every event must have one.
fn records_by_id<'a>(records: &'a [Value], ids: &[String]) -> Vec<&'a Value> {
    ids.iter()
        .map(|id| {
            records
                .iter()
                .find(|record| record["metadata"]["uid"] == id.as_str())
                .unwrap_or_else(|| panic!("no SIEM record for event {id}"))
        })
        .collect()
}

/// Regression: a 3 MB response body made the OCSF record larger than the broker takes; the
/// publish was retried for 60 s, the processor exited, and every restart met the same message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_megabyte_body_is_logged_and_left_out_of_its_siem_record() {
    let deployment = Deployment::new(1).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut events: Vec<_> = (0..20)
        .map(|sequence| call_event(&mut rng, sequence, 400))
        .collect();
    let huge_body = format!("\"{}\"", "z".repeat(3 * 1024 * 1024));
    let mid_body = format!("\"{}\"", "m".repeat(SIEM_BODY_MAX_BYTES + 100));
    events[5].response.as_mut().expect("response").body = Some(huge_body.clone());
    events[6].request.as_mut().expect("request").body = Some(mid_body.clone());
    // The gateway's producer would have to allow it too.
    let big_producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("message.max.bytes", "10000000")
        .create()
        .expect("producer");
    produce(&big_producer, &deployment.topic, &events).await;

    let config = deployment.write_config("deploy.toml", "");
    let stderr = deployment.dir.path().join("processor.log");
    let mut processor = spawn_processor(&config, &stderr, "info");
    deployment
        .wait_for_logged(events.len() as u64, Duration::from_secs(120))
        .await;
    // It goes on with later events.
    let mut later: Vec<_> = (20..25)
        .map(|sequence| call_event(&mut rng, sequence, 400))
        .collect();
    produce(&producer(), &deployment.topic, &later).await;
    deployment
        .wait_for_logged(25, Duration::from_secs(60))
        .await;
    processor.stop();
    events.append(&mut later);

    // The log holds every event whole (the huge body in a blob).
    let logs = deployment.read_logs().await;
    let entries = &logs[&0];
    assert_eq!(entries.len(), 25);
    assert_eq!(
        entries[5]
            .pointer("/event/response/body")
            .and_then(Value::as_str),
        Some(huge_body.as_str())
    );

    // Every event reached the SIEM topic; the large bodies as their size and hash only.
    let ids = event_ids(&events);
    let records = consume_all_with_python(&deployment.siem_topic, ids.len());
    let by_id = records_by_id(&records, &ids);
    for record in &records {
        assert!(record.to_string().len() <= SIEM_RECORD_MAX_BYTES);
    }
    let omitted = |record: &Value, part: &str, body: &str| {
        let callproof = &record["unmapped"]["callproof"];
        assert_eq!(callproof[part]["body"], Value::Null, "{part} body copied");
        let expected_sha256 = hex::encode(Sha256::digest(
            serde_json::to_vec(&Value::String(body.to_string())).expect("json"),
        ));
        assert_eq!(callproof[part]["body_omitted"]["bytes"], body.len());
        assert_eq!(callproof[part]["body_omitted"]["sha256"], expected_sha256);
        expected_sha256
    };
    let huge_sha256 = omitted(by_id[5], "response", &huge_body);
    omitted(by_id[6], "request", &mid_body);
    // The hash names the blob the log moved the body to.
    assert!(
        deployment
            .store_dir()
            .join("blobs/sha256")
            .join(&huge_sha256)
            .is_file()
    );
    assert_eq!(by_id[5]["unmapped"]["callproof"]["log"]["index"], 5);
    // Ordinary bodies are still copied.
    assert!(by_id[4]["unmapped"]["callproof"]["response"]["body"].is_string());
}

/// A record the producer refuses for its size (here `message.max.bytes` is below the size of
/// every full record) is replaced by its stub; a stub still too large is dropped. Both are
/// counted, the events are all in the log, and the processor goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_refused_as_too_large_are_stubbed_or_dropped_and_counted() {
    let deployment = Deployment::new(1).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(12);
    let mut events: Vec<_> = (0..30)
        .map(|sequence| call_event(&mut rng, sequence, 1000))
        .collect();
    // Its key (the call id) alone is over the limit: not even the stub fits.
    events[7].call_id = format!("call-{}", "k".repeat(4000));
    produce(&producer(), &deployment.topic, &events).await;
    let (config, metrics_port) =
        deployment.write_config_with("deploy.toml", r#""message.max.bytes" = "3000""#, "");
    let stderr = deployment.dir.path().join("processor.log");
    let mut processor = spawn_processor(&config, &stderr, "info");
    deployment
        .wait_for_logged(events.len() as u64, Duration::from_secs(120))
        .await;
    let metrics = scrape_metrics(metrics_port);
    processor.stop();

    let stubbed = metric_value(
        &metrics,
        "callproof_processor_siem_records_stubbed_total{reason=\"too_large\"}",
    );
    let dropped = metric_value(
        &metrics,
        "callproof_processor_siem_records_dropped_total{reason=\"too_large\"}",
    );
    assert_eq!(stubbed, Some(30.0), "{metrics}");
    assert_eq!(dropped, Some(1.0), "{metrics}");

    let logs = deployment.read_logs().await;
    assert_eq!(logs[&0].len(), 30);
    let records = consume_all_with_python(&deployment.siem_topic, 29);
    assert_eq!(records.len(), 29);
    let mut ids = event_ids(&events);
    ids.remove(7);
    for record in records_by_id(&records, &ids) {
        assert_eq!(record["class_uid"], 6003);
        assert_eq!(record["unmapped"]["callproof"]["truncated"], true);
        assert!(record["unmapped"]["callproof"].get("response").is_none());
        let index = record["unmapped"]["callproof"]["log"]["index"]
            .as_u64()
            .expect("log index");
        assert_eq!(
            logs[&0][index as usize]["event"]["event_id"],
            record["metadata"]["uid"]
        );
    }
    let log_text = std::fs::read_to_string(&stderr).expect("processor log");
    assert!(log_text.contains("publishing its stub"), "{log_text}");
    assert!(log_text.contains("not published"), "{log_text}");
}
