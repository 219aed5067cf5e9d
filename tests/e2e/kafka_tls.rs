//! Kafka over TLS with certificate verification and SCRAM authentication: the gateway and the
//! processor binaries reach a broker only through TLS (Tansu, requiring SCRAM-SHA-512, behind
//! Debian's stunnel4), with the password from the environment; the call's events become a
//! signed log, and clients that trust another CA, or give a wrong password, are refused with an
//! error that says why.

use std::path::Path;
use std::time::{Duration, Instant};

use callproof_tests::broker::{self, free_port};
use callproof_tests::function_service::FunctionService;
use callproof_tests::issuer::TestIssuer;
use callproof_tests::logged_entries;
use callproof_tests::process::{Service, binary, wait_for_ok};
use callproof_tests::tls::TlsBroker;
use serde_json::json;

/// librdkafka's words for a broker certificate that does not chain to the trusted CA.
const UNVERIFIED: &str = "certificate verify failed";
/// librdkafka's words for a SCRAM exchange the broker refused.
const UNAUTHENTICATED: &str = "SASL authentication error";
const PASSWORD: &str = "scram-password-of-the-test";

struct Deployment {
    work: tempfile::TempDir,
    issuer: TestIssuer,
    function: FunctionService,
    topic: String,
}

impl Deployment {
    /// A deployment file whose Kafka clients trust `ca`.
    fn config(&self, name: &str, kafka: &TlsBroker, ca: &Path, ports: (u16, u16)) -> String {
        let dir = self.work.path();
        let path = dir.join(name);
        let (ingress_port, metrics_port) = ports;
        std::fs::write(
            &path,
            format!(
                r#"
[ingress]
listen = "127.0.0.1:{ingress_port}"
instance_id = "tls-gateway"

[oidc]
issuer = "{issuer}"
audiences = ["callproof"]

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
siem_topic = "{topic}-siem"
delivery_timeout_ms = 3000

[kafka.properties]
"security.protocol" = "sasl_ssl"
"ssl.ca.location" = "{ca}"
"sasl.mechanism" = "SCRAM-SHA-512"
"sasl.username" = "{user}"
"sasl.password" = "${{KAFKA_PASSWORD}}"

[functions.lookup_customer]
upstream = "{function}/echo"
policy = {{ allow_groups = ["support"] }}

[processor]
group_id = "{topic}-processor"
batch_max_wait_ms = 100
metrics_listen = "127.0.0.1:{metrics_port}"
startup_timeout_ms = 5000

[storage]
url = "file://{store}"

[log]
signing_key_file = "{key}"

[index]
scratch_dir = "{index}"
split_interval_ms = 200
"#,
                issuer = self.issuer.url,
                brokers = kafka.bootstrap,
                topic = self.topic,
                ca = ca.display(),
                user = callproof_tests::tls::SCRAM_USER,
                function = self.function.url,
                store = dir.join("store").display(),
                key = dir.join("log.key").display(),
                index = dir.join("index").display(),
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

#[tokio::test]
async fn kafka_over_verified_tls_with_scram_and_a_wrong_ca_or_password_is_refused() {
    let kafka = TlsBroker::start(PASSWORD).unwrap();
    let trusted = TlsBroker::client_properties(&kafka.ca, PASSWORD);
    let topic = broker::unique_name("tls-calls");
    for (name, partitions) in [(topic.clone(), 2), (format!("{topic}-siem"), 1)] {
        broker::create_topic_with(&kafka.bootstrap, &name, partitions, &trusted)
            .await
            .unwrap();
    }
    let deployment = Deployment {
        work: tempfile::tempdir().unwrap(),
        issuer: TestIssuer::start().await.unwrap(),
        function: FunctionService::start().await.unwrap(),
        topic,
    };
    let work = deployment.work.path();
    let keygen = std::process::Command::new(binary("callproof-processor"))
        .args(["keygen", "--name", "tls.test/log", "--out"])
        .arg(work.join("log.key"))
        .output()
        .unwrap();
    assert!(keygen.status.success(), "{keygen:?}");

    let ports = (free_port().unwrap(), free_port().unwrap());
    let config = deployment.config("trusted.toml", &kafka, &kafka.ca, ports);
    // The password reaches the binaries as production's would: through the environment.
    let secret = [("KAFKA_PASSWORD", PASSWORD)];
    let gateway = Service::start_with_env(
        "ingress",
        &binary("callproof-ingress"),
        &["--config", &config],
        &secret,
        work,
    )
    .unwrap();
    let processor = Service::start_with_env(
        "processor",
        &binary("callproof-processor"),
        &["--config", &config],
        &secret,
        work,
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{}", ports.0);
    wait_for_ok(&format!("{base}/readyz"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", gateway.log_text()));

    let client = reqwest::Client::new();
    let token = deployment.issuer.token("alice", &["support"]);
    let invoke = |base: String| {
        let client = client.clone();
        let token = token.clone();
        async move {
            let response = client
                .post(format!("{base}/v1/functions/lookup_customer/invoke"))
                .bearer_auth(token)
                .json(&json!({"customer": 7}))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, answer) = invoke(base.clone()).await;
    assert_eq!(status, 200, "{answer}\n{}", gateway.log_text());
    assert_eq!(deployment.function.calls(), 1);

    // The processor read the call's three events over TLS and signed them into the log.
    let deadline = Instant::now() + Duration::from_secs(60);
    while logged_entries(&work.join("store")) < 3 {
        assert!(
            Instant::now() < deadline,
            "the events never reached the log\n{}",
            processor.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A processor that trusts another CA does not start, and says why.
    let wrong_ports = (free_port().unwrap(), free_port().unwrap());
    let wrong = deployment.config("wrong-ca.toml", &kafka, &kafka.other_ca, wrong_ports);
    let refused = std::process::Command::new(binary("callproof-processor"))
        .args(["--config", &wrong])
        .env("KAFKA_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains(UNVERIFIED), "{stderr}");

    // Nor does one with a wrong password, and it says why without printing any password.
    let other_ports = (free_port().unwrap(), free_port().unwrap());
    let other = deployment.config("wrong-password.toml", &kafka, &kafka.ca, other_ports);
    let refused = std::process::Command::new(binary("callproof-processor"))
        .args(["--config", &other])
        .env("KAFKA_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(stderr.contains(UNAUTHENTICATED), "{stderr}");
    assert!(!stderr.contains("not-the-password"), "{stderr}");

    // A gateway that trusts another CA is not ready and makes no call: the events cannot be
    // delivered, so the caller gets 503 and the function is not reached.
    let wrong_gateway = Service::start_with_env(
        "ingress-wrong-ca",
        &binary("callproof-ingress"),
        &["--config", &wrong],
        &secret,
        work,
    )
    .unwrap();
    let wrong_base = format!("http://127.0.0.1:{}", wrong_ports.0);
    wait_for_ok(&format!("{wrong_base}/healthz"), Duration::from_secs(30))
        .await
        .unwrap_or_else(|error| panic!("{error}\n{}", wrong_gateway.log_text()));
    let (status, answer) = invoke(wrong_base.clone()).await;
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("audit_unavailable"), "{answer}");
    assert_eq!(deployment.function.calls(), 1);
    let ready = client
        .get(format!("{wrong_base}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    assert!(
        wrong_gateway.log_text().contains(UNVERIFIED),
        "{}",
        wrong_gateway.log_text()
    );
}
