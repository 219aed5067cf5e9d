//! Approvals across gateway instances: two `callproof-ingress` processes on one calls topic.
//! A decision made through one releases the call held by the other, a call whose instance died
//! is executed by the survivor, a restarted instance rebuilds its held calls from Kafka, and in
//! every case the function runs exactly once.

use std::path::Path;
use std::time::Duration;

use callproof_schemas::EventKind;
use callproof_tests::broker;
use callproof_tests::function_service::FunctionService;
use callproof_tests::issuer::TestIssuer;
use callproof_tests::process::{Service, wait_for_ok};
use serde_json::{Value, json};

use crate::harness::{Answer, answer};

struct Instance {
    service: Service,
    url: String,
    config: std::path::PathBuf,
    name: String,
}

fn write_config(
    dir: &Path,
    name: &str,
    port: u16,
    issuer: &str,
    brokers: &str,
    topic: &str,
    upstream: &str,
) -> std::path::PathBuf {
    write_config_for(
        dir,
        name,
        port,
        issuer,
        brokers,
        topic,
        &format!("{upstream}/echo"),
    )
}

/// As [`write_config`], with the function's upstream URL given whole.
fn write_config_for(
    dir: &Path,
    name: &str,
    port: u16,
    issuer: &str,
    brokers: &str,
    topic: &str,
    upstream: &str,
) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"
[ingress]
listen = "127.0.0.1:{port}"
instance_id = "{name}"
approval_takeover_secs = 2

[oidc]
issuer = "{issuer}"
audiences = ["callproof"]

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
delivery_timeout_ms = 3000

[functions.transfer]
upstream = "{upstream}"
timeout_ms = 5000
policy = {{ allow_groups = ["support"] }}
approval = {{ approver_groups = ["treasury"] }}
"#
        ),
    )
    .unwrap();
    path
}

async fn start(dir: &Path, name: &str, config: &Path, port: u16) -> Instance {
    let service = Service::start_with_env(
        name,
        Path::new(env!("CARGO_BIN_EXE_callproof-ingress")),
        &["--config", config.to_str().unwrap()],
        &[("RUST_LOG", "info,callproof_ingress=debug")],
        dir,
    )
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    wait_for_ok(&format!("{url}/readyz"), Duration::from_secs(60))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", service.log_text()));
    Instance {
        service,
        url,
        config: config.to_path_buf(),
        name: name.to_string(),
    }
}

async fn invoke(
    instance: &Instance,
    token: &str,
    arguments: &Value,
    prefer_wait: Option<u64>,
) -> Answer {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/functions/transfer/invoke", instance.url))
        .bearer_auth(token)
        .json(arguments);
    if let Some(wait) = prefer_wait {
        request = request.header("prefer", format!("wait={wait}"));
    }
    answer(request).await
}

async fn approve(instance: &Instance, token: &str, call_id: &str) -> Answer {
    answer(
        reqwest::Client::new()
            .post(format!("{}/v1/approvals/{call_id}", instance.url))
            .bearer_auth(token)
            .json(&json!({"decision": "approve"})),
    )
    .await
}

async fn status(instance: &Instance, token: &str, call_id: &str, wait: u64) -> Answer {
    answer(
        reqwest::Client::new()
            .get(format!("{}/v1/calls/{call_id}", instance.url))
            .header("prefer", format!("wait={wait}"))
            .bearer_auth(token),
    )
    .await
}

fn events_of(brokers: &str, topic: &str, call_id: &str) -> Vec<callproof_schemas::CallEvent> {
    broker::consume(brokers, topic, usize::MAX, Duration::from_secs(3))
        .unwrap()
        .into_iter()
        .map(|message| callproof_schemas::decode(&message.payload).unwrap())
        .filter(|event| event.call_id == call_id)
        .collect()
}

#[tokio::test]
async fn decisions_travel_between_instances_and_calls_survive_a_dead_or_restarted_instance() {
    let brokers = broker::bootstrap();
    let topic = broker::unique_name("calls-instances");
    broker::create_topic(&brokers, &topic, 3).await.unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let function = FunctionService::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (broker::free_port().unwrap(), broker::free_port().unwrap());
    let config_a = write_config(
        work.path(),
        "gw-a",
        port_a,
        &issuer.url,
        &brokers,
        &topic,
        &function.url,
    );
    let config_b = write_config(
        work.path(),
        "gw-b",
        port_b,
        &issuer.url,
        &brokers,
        &topic,
        &function.url,
    );
    let mut a = start(work.path(), "gw-a", &config_a, port_a).await;
    let b = start(work.path(), "gw-b", &config_b, port_b).await;
    let alice = issuer.token("alice", &["support"]);
    let bob = issuer.token("bob", &["treasury"]);
    let logs = |a: &Instance, b: &Instance| {
        format!(
            "--- {}\n{}\n--- {}\n{}",
            a.name,
            a.service.log_text(),
            b.name,
            b.service.log_text()
        )
    };

    // 1. Held by A, approved through B: A's caller gets the answer, A executed it.
    let held = {
        let url = a.url.clone();
        let alice = alice.clone();
        tokio::spawn(async move {
            answer(
                reqwest::Client::new()
                    .post(format!("{url}/v1/functions/transfer/invoke"))
                    .header("prefer", "wait=30")
                    .bearer_auth(alice)
                    .json(&json!({"step": 1})),
            )
            .await
        })
    };
    let call_1 = loop {
        let pending = answer(
            reqwest::Client::new()
                .get(format!("{}/v1/approvals?status=pending", b.url))
                .bearer_auth(&bob),
        )
        .await;
        if let Some(call_id) = pending.body["approvals"][0]["call_id"].as_str() {
            break call_id.to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let decided = approve(&b, &bob, &call_1).await;
    assert_eq!(decided.status, 200, "{}\n{}", decided.text, logs(&a, &b));
    let released = held.await.unwrap();
    assert_eq!(released.status, 200, "{}\n{}", released.text, logs(&a, &b));
    assert_eq!(released.body["received"]["step"], 1);
    assert_eq!(function.calls(), 1);
    let events = events_of(&brokers, &topic, &call_1);
    let claim = events
        .iter()
        .find(|event| event.kind == EventKind::CallForwarded)
        .unwrap();
    assert_eq!(claim.gateway, "gw-a", "the receiving instance executes");
    assert_eq!(
        events
            .iter()
            .find(|event| event.kind == EventKind::ApprovalDecided)
            .unwrap()
            .gateway,
        "gw-b"
    );

    // 2. Received by A, which dies; approved through B, which takes the call over.
    let pending = invoke(&a, &alice, &json!({"step": 2}), None).await;
    assert_eq!(pending.status, 202, "{}", pending.text);
    let call_2 = pending.body["call_id"].as_str().unwrap().to_string();
    a.service.kill();
    // B learns of the call from Kafka.
    let mut decided = approve(&b, &bob, &call_2).await;
    for _ in 0..50 {
        if decided.status != 404 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        decided = approve(&b, &bob, &call_2).await;
    }
    assert_eq!(decided.status, 200, "{}", decided.text);
    let done = status(&b, &alice, &call_2, 20).await;
    assert_eq!(done.status, 200, "{}\n{}", done.text, logs(&a, &b));
    assert_eq!(done.body["status"], "completed", "{}", done.text);
    assert_eq!(done.body["result"]["body"]["received"]["step"], 2);
    assert_eq!(function.calls(), 2);

    // 3. Received by B and still pending when A comes back: A rebuilds everything from Kafka,
    //    executes nothing twice, and releases the call when approved through it.
    let pending = invoke(&b, &alice, &json!({"step": 3}), None).await;
    assert_eq!(pending.status, 202);
    let call_3 = pending.body["call_id"].as_str().unwrap().to_string();
    let restarted_a = start(work.path(), "gw-a-restarted", &a.config, port_a).await;
    let seen = status(&restarted_a, &alice, &call_2, 0).await;
    assert_eq!(seen.body["status"], "completed", "{}", seen.text);
    let decided = approve(&restarted_a, &bob, &call_3).await;
    assert_eq!(decided.status, 200, "{}", decided.text);
    let done = status(&restarted_a, &alice, &call_3, 20).await;
    assert_eq!(
        done.body["status"],
        "completed",
        "{}\n{}",
        done.text,
        logs(&restarted_a, &b)
    );
    // A little time for a wrong second execution to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steps: Vec<Value> = function
        .received()
        .iter()
        .map(|request| request.json()["step"].clone())
        .collect();
    assert_eq!(
        steps,
        [json!(1), json!(2), json!(3)],
        "each call ran exactly once"
    );
    for call_id in [&call_1, &call_2, &call_3] {
        let forwarded = events_of(&brokers, &topic, call_id)
            .iter()
            .filter(|event| event.kind == EventKind::CallCompleted)
            .count();
        assert_eq!(forwarded, 1, "{call_id}");
    }
}

/// Regression: a call claimed by an instance that then died for good stayed `executing` forever.
/// After the function's timeout plus the takeover period, the survivor closes it as
/// `interrupted` and never runs the function a second time.
#[tokio::test]
async fn a_call_whose_claimant_died_while_executing_is_closed_as_interrupted_not_rerun() {
    let brokers = broker::bootstrap();
    let topic = broker::unique_name("calls-interrupted");
    broker::create_topic(&brokers, &topic, 3).await.unwrap();
    let issuer = TestIssuer::start().await.unwrap();
    let function = FunctionService::start().await.unwrap();
    let work = tempfile::tempdir().unwrap();
    // `/slow` answers after 3 s, within the 5 s timeout: long enough to kill the claimant first.
    let slow = format!("{}/slow", function.url);
    let (port_a, port_b) = (broker::free_port().unwrap(), broker::free_port().unwrap());
    let config_a = write_config_for(
        work.path(),
        "gw-a",
        port_a,
        &issuer.url,
        &brokers,
        &topic,
        &slow,
    );
    let config_b = write_config_for(
        work.path(),
        "gw-b",
        port_b,
        &issuer.url,
        &brokers,
        &topic,
        &slow,
    );
    let mut a = start(work.path(), "gw-a", &config_a, port_a).await;
    let b = start(work.path(), "gw-b", &config_b, port_b).await;
    let alice = issuer.token("alice", &["support"]);
    let bob = issuer.token("bob", &["treasury"]);

    let pending = invoke(&a, &alice, &json!({"step": "once"}), None).await;
    assert_eq!(pending.status, 202, "{}", pending.text);
    let call_id = pending.body["call_id"].as_str().unwrap().to_string();
    // Approved through its owner, which claims and calls the function at once; it dies while
    // the function is still working.
    let decided = approve(&a, &bob, &call_id).await;
    assert_eq!(decided.status, 200, "{}", decided.text);
    while function.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.service.kill();

    let closed = status(&b, &alice, &call_id, 30).await;
    assert_eq!(
        closed.body["status"],
        "failed",
        "{}\n--- gw-a\n{}\n--- gw-b\n{}",
        closed.text,
        a.service.log_text(),
        b.service.log_text()
    );
    let events = events_of(&brokers, &topic, &call_id);
    let claim = events
        .iter()
        .find(|event| event.kind == EventKind::CallForwarded)
        .unwrap();
    assert_eq!(claim.gateway, "gw-a");
    let failed: Vec<_> = events
        .iter()
        .filter(|event| event.kind == EventKind::CallFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{events:?}");
    assert_eq!(failed[0].gateway, "gw-b");
    assert_eq!(failed[0].failure.as_ref().unwrap().code, "interrupted");
    assert!(
        events
            .iter()
            .all(|event| event.kind != EventKind::CallCompleted)
    );
    // A little time for a wrong second execution to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(function.calls(), 1, "the function ran once, never again");
}
