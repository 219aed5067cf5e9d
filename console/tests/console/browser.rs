//! The console in a real browser against an identity provider we did not write and the real
//! gateway: `console/tests/browser/e2e.mjs` drives Debian's Chromium with playwright-core
//! through sign-in at node-oidc-provider (`idp.mjs`), the inbox with held calls (live), a deny
//! that needs a comment, an approval with a comment, a stale page, a second vote, a form
//! without its CSRF token, a refused self-approval, a forged state, a replayed code and logout.
//! `scripts/install-browser-tests` installs Chromium and the npm packages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use callproof_config::{Config, Service};
use callproof_tests::broker;
use callproof_tests::function_service::FunctionService;
use callproof_tests::process::{self, wait_for_port};

const RESOURCE: &str = "https://callproof.test/api";

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

/// Where the screenshots are kept for the closing note, outside the repository, when there.
fn notes_screenshots() -> Option<PathBuf> {
    std::env::var_os("CALLPROOF_SCREENSHOTS")
        .map(PathBuf::from)
        .or_else(|| {
            Path::new("/work/notes")
                .is_dir()
                .then(|| PathBuf::from("/work/notes/screenshots"))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approvers_decide_in_a_real_browser_signed_in_at_a_real_provider() {
    let node_modules = browser_dir().join("node_modules");
    assert!(
        node_modules.join("playwright-core").is_dir()
            && node_modules.join("oidc-provider").is_dir(),
        "the browser tests are not installed: run scripts/install-browser-tests"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run scripts/install-browser-tests"
    );
    let work = tempfile::tempdir().unwrap();
    let screenshots = work.path().join("screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();

    // The provider first: the gateway and the console discover it.
    let idp_port = broker::free_port().unwrap();
    let console_port = broker::free_port().unwrap();
    let evidence_port = broker::free_port().unwrap();
    let evidence_url = format!("http://127.0.0.1:{evidence_port}");
    let idp_url = format!("http://127.0.0.1:{idp_port}");
    let console_url = format!("http://127.0.0.1:{console_port}");
    let mut idp = process::Service::start(
        "idp",
        Path::new("node"),
        &[
            browser_dir().join("idp.mjs").to_str().unwrap(),
            &idp_port.to_string(),
            &console_url,
            RESOURCE,
        ],
        work.path(),
    )
    .unwrap();
    wait_for_port(idp_port, Duration::from_secs(20))
        .unwrap_or_else(|error| panic!("{error}: {}", idp.log_text()));

    // The gateway, with two functions that need approval by treasury.
    let brokers = broker::bootstrap();
    let topic = broker::unique_name("console-calls");
    broker::create_topic(&brokers, &topic, 1).await.unwrap();
    broker::create_topic(&brokers, &format!("{topic}-siem"), 1)
        .await
        .unwrap();
    let functions = FunctionService::start().await.unwrap();
    let source = format!(
        r#"
[ingress]
listen = "127.0.0.1:0"
instance_id = "gw-console-test"
approval_takeover_secs = 2

[oidc]
issuer = "{idp_url}"
audiences = ["{RESOURCE}"]

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
delivery_timeout_ms = 5000

[functions.refund]
upstream = "{upstream}/echo"
policy = {{ allow_groups = ["support"] }}
approval = {{ approver_groups = ["treasury"], condition = 'args.amount > 1000' }}

[functions.payout]
upstream = "{upstream}/echo"
policy = {{ allow_groups = ["support"] }}
approval = {{ approver_groups = ["treasury"], quorum = 2 }}
"#,
        upstream = functions.url
    );
    let config =
        Config::from_toml_with_env(&source, "gateway.toml", Service::Ingress, &|_| None).unwrap();
    let gateway = callproof_ingress::App::build(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ingress_url = format!("http://{}", listener.local_addr().unwrap());
    let router = callproof_ingress::router(gateway.state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    wait_until_ready(&ingress_url).await;

    // The console, as `callproof-console` builds it from its section.
    let source = format!(
        r#"
[oidc]
issuer = "{idp_url}"
audiences = ["{RESOURCE}"]

[console]
listen = "127.0.0.1:{console_port}"
public_url = "{console_url}"
client_id = "callproof-console"
client_secret = "${{CONSOLE_SECRET}}"
resource = "{RESOURCE}"
scopes = ["openid", "profile", "email", "groups"]
ingress_url = "{ingress_url}"
evidence_url = "{evidence_url}"
inbox_refresh_secs = 1
"#
    );
    let config = Config::from_toml_with_env(&source, "console.toml", Service::Console, &|name| {
        (name == "CONSOLE_SECRET").then(|| "console-secret".to_string())
    })
    .unwrap();
    let console = callproof_console::App::build(&config).unwrap();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", console_port))
        .await
        .unwrap();
    let router = callproof_console::router(console.state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });

    let driver = Driver {
        console_url: console_url.clone(),
        idp_url: idp_url.clone(),
        ingress_url: ingress_url.clone(),
        screenshots: screenshots.clone(),
        chromium: chromium.clone(),
    };
    let approvals = driver.run("approvals").await;
    assert!(approvals.contains("\"ok\":true"), "{approvals}");

    // The function ran once, for the approved refund only: the denied one and the payout
    // waiting for a second approver never reached it.
    let received = functions.received();
    assert_eq!(received.len(), 1, "calls that reached the function");
    assert_eq!(received[0].json()["amount"], 2500);

    // What the gateway recorded becomes evidence: the real processor writes the logs and the
    // index from the topic, and the evidence API serves them to the auditor's browser.
    let store = work.path().join("store");
    let index = work.path().join("index");
    let (signer_key, verifier_key) =
        callproof_tlog::note::NoteSigner::generate("console.test/log").unwrap();
    let evidence_source = format!(
        r#"
[oidc]
issuer = "{idp_url}"
audiences = ["{RESOURCE}"]

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
siem_topic = "{topic}-siem"

[processor]
group_id = "{group}"
batch_max_events = 4
batch_max_wait_ms = 100

[storage]
url = "file://{store}"

[log]
signing_key = "{signer_key}"

[index]
path = "{index}"
commit_interval_ms = 200
writer_memory_mb = 20

[evidence]
listen = "127.0.0.1:{evidence_port}"
verifier_key = "{verifier_key}"
"#,
        group = broker::unique_name("console-processor"),
        store = store.display(),
        index = index.display(),
    );
    let load = |service| {
        Config::from_toml_with_env(&evidence_source, "evidence.toml", service, &|_| None).unwrap()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let processor_config = load(Service::Processor);
    let processor = tokio::spawn(async move {
        callproof_processor::run(processor_config, None, async {
            let _ = stopped.await;
        })
        .await
    });
    // Every event the gateway published is in the log; then a clean stop, which commits the
    // index, and the evidence API (its own binary: one metrics recorder per process).
    let published = published_events(&brokers, &topic);
    for _ in 0..600 {
        if callproof_tests::logged_entries(&store) >= published {
            break;
        }
        assert!(!processor.is_finished(), "the processor stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(callproof_tests::logged_entries(&store) >= published);
    let _ = stop.send(());
    processor.await.unwrap().unwrap();
    let config_file = work.path().join("evidence.toml");
    std::fs::write(&config_file, &evidence_source).unwrap();
    let mut evidence = process::Service::start(
        "evidence",
        &process::binary("callproof-evidence"),
        &["--config", config_file.to_str().unwrap()],
        work.path(),
    )
    .unwrap();
    wait_for_port(evidence_port, Duration::from_secs(30))
        .unwrap_or_else(|error| panic!("{error}: {}", evidence.log_text()));
    let audit = driver.run("audit").await;
    assert!(audit.contains("\"ok\":true"), "{audit}");
    idp.kill();
    evidence.kill();

    for name in [
        "inbox.png",
        "decided.png",
        "search.png",
        "timeline.png",
        "report.png",
    ] {
        let shot = screenshots.join(name);
        let bytes = std::fs::read(&shot).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{name} is not a PNG");
        if let Some(keep) = notes_screenshots() {
            std::fs::create_dir_all(&keep).unwrap();
            std::fs::copy(&shot, keep.join(format!("console-{name}"))).unwrap();
        }
    }
}

/// How many events the gateway published: the topic's high watermark, read with a client of
/// the test's own.
fn published_events(brokers: &str, topic: &str) -> u64 {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", broker::unique_name("console-watermarks"))
        .create()
        .unwrap();
    let (low, high) = consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap();
    assert_eq!(low, 0);
    u64::try_from(high).unwrap()
}

struct Driver {
    console_url: String,
    idp_url: String,
    ingress_url: String,
    screenshots: PathBuf,
    chromium: String,
}

impl Driver {
    /// Runs one phase of `e2e.mjs`; its output, or a panic with it and why.
    async fn run(&self, phase: &str) -> String {
        let mut command = Command::new("node");
        command
            .arg(browser_dir().join("e2e.mjs"))
            .env("PHASE", phase)
            .env("CONSOLE_URL", &self.console_url)
            .env("IDP_URL", &self.idp_url)
            .env("INGRESS_URL", &self.ingress_url)
            .env("RESOURCE", RESOURCE)
            .env("SCREENSHOTS", &self.screenshots)
            .env("CHROMIUM", &self.chromium);
        let output = tokio::task::spawn_blocking(move || command.output().unwrap())
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "the browser test's {phase} phase failed:\n{stdout}\n{stderr}"
        );
        stdout
    }
}

async fn wait_until_ready(url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if let Ok(response) = client.get(format!("{url}/readyz")).send().await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway did not become ready");
}
