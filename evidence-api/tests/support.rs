//! The harness: a real deployment on the shared broker (`KAFKA_BROKERS`). Events are produced
//! to a topic of the test's own, the real processor pipeline writes the logs and the index to
//! a temporary directory, and the evidence API serves them on a loopback port, with the local
//! OIDC issuer minting tokens.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use callproof_schemas::{
    Actor, Approval, ApprovalDecision, CallEvent, Decision, EventKind, Principal, Request, Response,
};
use callproof_tests::broker::{bootstrap, create_topic, unique_name};
use callproof_tests::issuer::TestIssuer;
use callproof_tlog::note::NoteSigner;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;

pub struct Deployment {
    pub dir: tempfile::TempDir,
    pub issuer: TestIssuer,
    pub url: String,
    pub http: reqwest::Client,
    pub auditor_token: String,
    /// First and last event time, µs.
    pub period: (i64, i64),
}

pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_micros() as i64)
        .unwrap_or_default()
}

/// One event of a call.
pub fn event(call_id: &str, seq: i32, kind: EventKind, time: i64, subject: &str) -> CallEvent {
    CallEvent {
        event_id: uuid::Uuid::now_v7().to_string(),
        call_id: call_id.to_string(),
        seq,
        kind,
        time,
        gateway: "gw-test".into(),
        function: "get_customer".into(),
        principal: Some(Principal {
            issuer: "https://issuer.example".into(),
            subject: subject.into(),
            email: None,
            groups: vec!["support".into()],
            client_id: Some("agent-app".into()),
            actor: Some(Actor {
                subject: "agent-7".into(),
                issuer: None,
                client_id: Some("agent-app".into()),
            }),
            authentication: None,
        }),
        request: None,
        response: None,
        decision: None,
        approval: None,
        failure: None,
        masking: Vec::new(),
        mcp: None,
    }
}

/// The calls of the scenario: complete, refused, approved, self-approved, approval denied,
/// approval expired, still open, with a sequence gap, and one whose request is too large for
/// an entry (its body goes to a blob).
pub fn scenario(start: i64) -> Vec<CallEvent> {
    use EventKind::*;
    let mut time = start;
    let mut next = || {
        time += 1_000;
        time
    };
    let mut events = Vec::new();
    let mut ok = vec![
        event("call-ok", 0, CallReceived, next(), "ana"),
        event("call-ok", 1, CallForwarded, next(), "ana"),
        event("call-ok", 2, CallCompleted, next(), "ana"),
    ];
    ok[0].request = Some(Request {
        method: "POST".into(),
        path: "/v1/functions/get_customer/invoke".into(),
        body: Some(r#"{"question":"refund status"}"#.into()),
        body_bytes: 28,
        content_type: Some("application/json".into()),
    });
    ok[1].decision = Some(Decision {
        allowed: true,
        policy_id: Some("support-read".into()),
        reason: "group support may call get_customer".into(),
    });
    ok[2].response = Some(Response {
        status: 200,
        body: Some(r#"{"answer":"refund approved","email":"ana.customer@example.org"}"#.into()),
        body_bytes: 60,
        latency_micros: 1_200,
    });
    events.extend(ok);
    // A refusal is recorded by its call_denied alone, as the gateway does.
    let mut denied = event("call-denied", 0, CallDenied, next(), "bo");
    denied.decision = Some(Decision {
        allowed: false,
        policy_id: Some("support-read".into()),
        reason: "group marketing may not call get_customer".into(),
    });
    events.push(denied);
    for (call_id, caller, reviewer) in [
        ("call-approved", "ana", "rita"),
        ("call-self", "sam", "sam"),
    ] {
        let mut approval = vec![
            event(call_id, 0, CallReceived, next(), caller),
            event(call_id, 1, ApprovalRequested, next(), caller),
            event(call_id, 2, ApprovalDecided, next(), caller),
            event(call_id, 3, CallForwarded, next(), caller),
            event(call_id, 4, CallCompleted, next(), caller),
        ];
        // As the gateway records a decision: `decision.allowed` says whether it approved.
        approval[2].decision = Some(Decision {
            allowed: true,
            policy_id: Some("functions.get_customer.approval".into()),
            reason: format!("{reviewer} approved the call"),
        });
        approval[2].approval = Some(Approval {
            approvers: vec!["approvers".into()],
            quorum: 1,
            reviewer: Some(reviewer.into()),
            decision: Some(ApprovalDecision::Approve),
            comment: Some("ok".into()),
            expires_at: None,
            arguments_sha256: None,
        });
        events.extend(approval);
    }
    // A refund a reviewer refused, one nobody decided in time, and a call still open.
    let mut refused = vec![
        event("call-refused", 0, CallReceived, next(), "ana"),
        event("call-refused", 1, ApprovalRequested, next(), "ana"),
        event("call-refused", 2, ApprovalDecided, next(), "ana"),
    ];
    refused[2].decision = Some(Decision {
        allowed: false,
        policy_id: Some("functions.get_customer.approval".into()),
        reason: "rita denied the call".into(),
    });
    refused[2].approval = Some(Approval {
        approvers: vec!["approvers".into()],
        quorum: 1,
        reviewer: Some("rita".into()),
        decision: Some(ApprovalDecision::Deny),
        comment: Some("not this one".into()),
        expires_at: None,
        arguments_sha256: None,
    });
    events.extend(refused);
    events.push(event("call-expired", 0, CallReceived, next(), "ana"));
    events.push(event("call-expired", 1, ApprovalRequested, next(), "ana"));
    events.push(event("call-expired", 2, ApprovalExpired, next(), "ana"));
    events.push(event("call-open", 0, CallReceived, next(), "ana"));
    events.push(event("call-gap", 0, CallReceived, next(), "ana"));
    events.push(event("call-gap", 2, CallCompleted, next(), "ana"));
    let mut big = vec![
        event("call-big", 0, CallReceived, next(), "ana"),
        event("call-big", 1, CallForwarded, next(), "ana"),
        event("call-big", 2, CallCompleted, next(), "ana"),
    ];
    big[0].request = Some(Request {
        method: "POST".into(),
        path: "/v1/functions/get_customer/invoke".into(),
        body: Some(format!("{{\"note\":\"{}\"}}", "bulk ".repeat(15_000))),
        body_bytes: 75_000,
        content_type: Some("application/json".into()),
    });
    events.extend(big);
    events
}

impl Deployment {
    /// Produces `events`, runs the processor until all are indexed, stops it, and starts the
    /// evidence API over what it wrote.
    pub async fn start(events: &[CallEvent]) -> Deployment {
        let dir = tempfile::tempdir().expect("tempdir");
        let issuer = TestIssuer::start().await.expect("issuer");
        let brokers = bootstrap();
        let topic = unique_name("evidence-calls");
        create_topic(&brokers, &topic, 2).await.expect("topic");
        create_topic(&brokers, &format!("{topic}-siem"), 1)
            .await
            .expect("siem topic");
        let (signer_key, verifier_key) = NoteSigner::generate("test.callproof/log").expect("key");
        let config_text = format!(
            r#"
[oidc]
issuer = "{issuer}"
audiences = ["callproof"]

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
siem_topic = "{topic}-siem"

[processor]
group_id = "{group}"
# Small batches, so that every partition keeps several checkpoints to prove consistency between.
batch_max_events = 8
batch_max_wait_ms = 100

[storage]
url = "file://{store}"

[log]
signing_key = "{signer_key}"

# The processor's indexer builds splits in its own scratch directory; the evidence API
# downloads them from the store into a cache of its own.
[index]
scratch_dir = "{index}"
split_interval_ms = 200
writer_memory_mb = 20

[functions.get_customer]
upstream = "http://127.0.0.1:9/customer"
credential = {{ kind = "bearer", token = "${{CALLPROOF_TEST_UNSET_FUNCTION_TOKEN}}" }}

[functions.get_customer.policy]
allow_groups = ["support"]
allow = 'has(principal.actor) && principal.actor.sub == "support-copilot"'

[functions.get_customer.approval]
condition = "args.amount > 1000"
approver_groups = ["approvers"]
webhook_url = "${{CALLPROOF_TEST_UNSET_WEBHOOK}}"

[evidence]
listen = "127.0.0.1:0"
verifier_key = "{verifier_key}"
index_cache_dir = "{cache}"
index_refresh_ms = 200
"#,
            issuer = issuer.url,
            group = unique_name("evidence-group"),
            store = dir.path().join("store").display(),
            index = dir.path().join("index-scratch").display(),
            cache = dir.path().join("evidence-cache").display(),
        );
        let load = |service| {
            callproof_config::Config::from_toml(&config_text, "evidence-test.toml", service)
                .expect("config")
        };
        // One file for both, as a deployment may have it: the evidence API must start without
        // the processor's signing key and without the functions' credentials, which name
        // variables that are not set.
        let config = load(callproof_config::Service::Evidence);

        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("acks", "all")
            .create()
            .expect("producer");
        for event in events {
            let payload = callproof_schemas::encode(event).expect("encode");
            producer
                .send(
                    FutureRecord::to(&topic)
                        .key(&event.call_id)
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .map_err(|(error, _)| error)
                .expect("delivered");
        }

        // The real pipeline, until every event is indexed; then a clean stop, so the store
        // and the index stay still for the tests.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let processor_config = load(callproof_config::Service::Processor);
        let processor = tokio::spawn(async move {
            callproof_processor::run(processor_config, None, async {
                let _ = stopped.await;
            })
            .await
        });
        let app = callproof_evidence::App::build(config)
            .await
            .expect("evidence API");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let index = app.state.index.clone();
            let indexed = tokio::task::spawn_blocking(move || {
                index.count(&callproof_evidence::search::Filter::default())
            })
            .await
            .expect("join")
            .unwrap_or(0);
            if indexed >= events.len() {
                break;
            }
            assert!(
                Instant::now() < deadline && !processor.is_finished(),
                "only {indexed} of {} events indexed",
                events.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let _ = stop.send(());
        processor
            .await
            .expect("join")
            .expect("processor ran cleanly");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, callproof_evidence::router(app.state)).await;
        });
        let times: Vec<i64> = events.iter().map(|event| event.time).collect();
        Deployment {
            auditor_token: issuer.token("alice", &["auditor"]),
            issuer,
            url,
            http: reqwest::Client::new(),
            period: (
                times.iter().copied().min().unwrap_or_default(),
                times.iter().copied().max().unwrap_or_default() + 1,
            ),
            dir,
        }
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// GET as the auditor; returns status and body.
    pub async fn get(&self, path: &str) -> (u16, Vec<u8>) {
        self.get_with(path, Some(&self.auditor_token)).await
    }

    pub async fn get_with(&self, path: &str, token: Option<&str>) -> (u16, Vec<u8>) {
        let mut request = self.http.get(format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        (status, response.bytes().await.expect("body").to_vec())
    }

    /// GET as the auditor, expecting 200 and JSON.
    pub async fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("json")
    }

    /// `?from=..&to=..` of the scenario's period.
    pub fn period_query(&self) -> String {
        let format = |micros: i64| {
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
                .expect("time")
                .format(&time::format_description::well_known::Rfc3339)
                .expect("format")
        };
        format!(
            "from={}&to={}",
            format(self.period.0),
            format(self.period.1)
        )
    }

    /// Writes a file in the test directory.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, bytes).expect("write");
        path
    }
}

/// Runs the real `callproof-verify` (built by `cargo build --workspace --bins`, as
/// `scripts/test` does first); returns exit code and stdout + stderr.
pub fn verify(args: &[&str]) -> (i32, String) {
    let program = callproof_tests::process::binary("callproof-verify");
    assert!(
        program.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
        program.display()
    );
    let output = Command::new(&program)
        .args(args)
        .output()
        .expect("callproof-verify runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// Flips one byte of a file, returning the original contents to put back.
pub fn flip_byte(path: &Path, position: usize) -> Vec<u8> {
    let original = std::fs::read(path).expect("read");
    let mut changed = original.clone();
    changed[position] ^= 0x01;
    std::fs::write(path, &changed).expect("write");
    original
}

/// Packs files into a `.tar.gz`, as a bundle.
pub fn pack(files: &callproof_tlog::bundle::BundleFiles) -> Vec<u8> {
    callproof_tlog::bundle::write_bundle(
        files
            .iter()
            .map(|(path, bytes)| (path.as_str(), bytes.as_slice())),
        0,
    )
    .expect("bundle")
}
