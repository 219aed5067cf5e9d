//! The gateway binary in the data path: a call succeeds with the gateway-held credential, its
//! events are on Kafka (read back by Python's confluent-kafka and fastavro), a refusal reaches
//! nothing, and with the broker stopped nothing is called at all.

use std::process::Command;
use std::time::Duration;

use callproof_tests::broker::{self, PrivateBroker};
use callproof_tests::function_service::FunctionService;
use callproof_tests::issuer::TestIssuer;
use callproof_tests::process::{Service, binary, wait_for_ok};
use callproof_tests::workspace_root;
use serde_json::{Value, json};

const UPSTREAM_TOKEN: &str = "e2e-upstream-credential-5c1f";

#[tokio::test]
async fn gateway_binary_records_every_call_on_kafka_before_calling_the_function() {
    let mut kafka = PrivateBroker::start().unwrap();
    let topic = broker::unique_name("e2e-calls");
    broker::create_topic(&kafka.bootstrap, &topic, 3)
        .await
        .unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let function = FunctionService::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let port = broker::free_port().unwrap();
    let config = work.path().join("callproof.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[ingress]
listen = "127.0.0.1:{port}"
instance_id = "e2e-gateway"

[oidc]
issuer = "{issuer}"
audiences = ["callproof"]

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
delivery_timeout_ms = 3000

[functions.lookup_customer]
upstream = "{function}/echo"
credential = {{ kind = "bearer", token = "${{E2E_UPSTREAM_TOKEN}}" }}
[functions.lookup_customer.policy]
allow_groups = ["support"]
mask_request = ["password"]
"#,
            issuer = issuer.url,
            brokers = kafka.bootstrap,
            function = function.url,
        ),
    )
    .unwrap();
    let program = binary("callproof-ingress");
    assert!(
        program.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        program.display()
    );
    // SAFETY of the secret: it travels only through the environment, as in production.
    let mut gateway = Service::start_with_env(
        "ingress",
        &program,
        &["--config", config.to_str().unwrap()],
        &[
            ("E2E_UPSTREAM_TOKEN", UPSTREAM_TOKEN),
            ("RUST_LOG", "debug"),
        ],
        work.path(),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    wait_for_ok(&format!("{base}/readyz"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", gateway.log_text()));
    let client = reqwest::Client::new();
    let invoke = |token: String, body: Value| {
        let client = client.clone();
        let url = format!("{base}/v1/functions/lookup_customer/invoke");
        async move {
            let response = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let call_id = response
                .headers()
                .get("x-callproof-call-id")
                .map(|value| value.to_str().unwrap().to_string());
            (status, call_id, response.text().await.unwrap())
        }
    };

    // 1. A call that succeeds.
    let alice = issuer.token("alice", &["support"]);
    let (status, call_id, answer) = invoke(
        alice.clone(),
        json!({"customer": 7, "password": "correct horse battery staple"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let call_id = call_id.unwrap();
    assert!(
        !answer.contains("4111 1111 1111 1111"),
        "card number came back: {answer}"
    );
    let received = function.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        received[0].header("authorization"),
        Some(format!("Bearer {UPSTREAM_TOKEN}").as_str())
    );
    let forwarded = String::from_utf8_lossy(&received[0].body).into_owned();
    assert!(
        !forwarded.contains("correct horse"),
        "a masked field reached the function"
    );
    assert!(!forwarded.contains(&alice));

    // 2. A call the policy refuses reaches nothing.
    let mallory = issuer.token("mallory", &["sales"]);
    let (status, denied_id, _) = invoke(mallory, json!({"customer": 7})).await;
    assert_eq!(status, 403);
    assert_eq!(function.calls(), 1);

    // 3. The events, read by an independent client and decoder.
    let events = read_events_with_python(&kafka.bootstrap, &topic, 4);
    let of = |id: &str| -> Vec<String> {
        events
            .iter()
            .filter(|record| record["event"]["call_id"] == id)
            .map(|record| record["event"]["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        of(&call_id),
        ["call_received", "call_forwarded", "call_completed"]
    );
    assert_eq!(of(denied_id.as_deref().unwrap()), ["call_denied"]);
    for record in &events {
        assert_eq!(record["key"], record["event"]["call_id"]);
        let text = record.to_string();
        assert!(!text.contains(UPSTREAM_TOKEN) && !text.contains("correct horse"));
    }
    let received_event = events
        .iter()
        .find(|record| record["event"]["kind"] == "call_received")
        .unwrap();
    assert_eq!(received_event["event"]["principal"]["subject"], "alice");
    assert_eq!(received_event["event"]["gateway"], "e2e-gateway");

    // 4. With the broker stopped, calls get 503 and the function is not called.
    kafka.stop();
    let (status, _, answer) = invoke(alice.clone(), json!({"customer": 8})).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("audit_unavailable"));
    assert_eq!(
        function.calls(),
        1,
        "the function was called with no audit record"
    );

    // 5. No credential or token in anything the gateway logged, even at debug level.
    gateway.kill();
    let log = gateway.log_text();
    assert!(log.contains("gateway listening"), "{log}");
    assert!(
        !log.contains(UPSTREAM_TOKEN),
        "the upstream credential is in the log"
    );
    assert!(!log.contains(&alice), "a caller's token is in the log");
}

fn read_events_with_python(brokers: &str, topic: &str, expected: usize) -> Vec<Value> {
    let root = workspace_root();
    let output = Command::new("python3")
        .arg(root.join("tests/e2e/read_events.py"))
        .args([brokers, topic])
        .arg(root.join("schemas/call_event.avsc"))
        .args([expected.to_string(), "30".to_string()])
        .output()
        .expect("python3 with confluent-kafka and fastavro (.ci/run installs them)");
    assert!(
        output.status.success(),
        "read_events.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), expected, "{events:?}");
    events
}
