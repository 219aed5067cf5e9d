//! The console in a real browser against an identity provider we did not write and the real
//! gateway: `console/tests/browser/e2e.mjs` drives Debian's Chromium with playwright-core
//! through sign-in at node-oidc-provider (`idp.mjs`), the inbox with held calls (live), a deny
//! that needs a comment, an approval with a comment, a stale page, a second vote, a form
//! without its CSRF token, a refused self-approval, a forged state, a replayed code and logout;
//! then an MCP tool call (made here, through the gateway's `/mcp` to the Python SDK's server)
//! held until the approver approves it in the browser, and the same call made again returning
//! the one execution's result; then the auditor's pages over what all of it recorded.
//! `scripts/install-browser-tests` installs Chromium and the npm packages.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use callproof_config::{Config, Service};
use callproof_tests::broker;
use callproof_tests::function_service::FunctionService;
use callproof_tests::mcp_upstream::{McpUpstream, Sdk};
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
    let mcp_upstream =
        McpUpstream::start(Sdk::V2, None).unwrap_or_else(|error| panic!("{error:#}"));
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

# The same token's audience serves /mcp: the provider issues for one resource.
[mcp]
resource = "{RESOURCE}"
hold_wait_secs = 2

[mcp.servers.crm]
url = "{mcp_url}"
[mcp.servers.crm.tools.echo.policy]
allow_groups = ["support"]
[mcp.servers.crm.tools.echo.approval]
approver_groups = ["treasury"]
"#,
        upstream = functions.url,
        mcp_url = mcp_upstream.url,
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
    let approvals = driver.run("approvals", &[]).await;
    assert!(approvals.contains("\"ok\":true"), "{approvals}");
    let alice_token = serde_json::from_str::<Value>(approvals.trim())
        .ok()
        .and_then(|result| result["alice_token"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no token for alice in {approvals}"));

    // An agent acting as alice calls the MCP tool: held, it answers with the pending call's id.
    let mut agent = McpAgent::new(&ingress_url, &alice_token);
    agent.initialize().await;
    let arguments = json!({"message": "refund order 7 to card 4111 1111 1111 1111"});
    let pending = agent.call_echo(&arguments).await;
    assert_eq!(pending["result"]["isError"], true, "{pending}");
    assert_eq!(
        pending["result"]["_meta"]["dev.callproof/status"], "pending_approval",
        "{pending}"
    );
    let mcp_call = pending["result"]["_meta"]["dev.callproof/call_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no call id: {pending}"))
        .to_string();
    assert!(
        !mcp_upstream.log_text().contains("CALL echo"),
        "the tool ran before approval"
    );

    // Bob sees it in his inbox as the MCP tool, and approves it there.
    let approved = driver.run("mcp", &[("MCP_CALL_ID", &mcp_call)]).await;
    assert!(approved.contains("\"ok\":true"), "{approved}");

    // The same call again: the one execution's result, and the tool ran once.
    let done = agent.call_echo(&arguments).await;
    assert_ne!(done["result"]["isError"], true, "{done}");
    let text = done["result"].to_string();
    assert!(text.contains("refund order 7"), "{done}");
    assert!(!text.contains("4111 1111 1111 1111"), "unmasked: {done}");
    assert_eq!(
        mcp_upstream.log_text().matches("CALL echo").count(),
        1,
        "{}",
        mcp_upstream.log_text()
    );

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
scratch_dir = "{index}"
split_interval_ms = 200
writer_memory_mb = 20

[evidence]
listen = "127.0.0.1:{evidence_port}"
index_cache_dir = "{index}-evidence-cache"
index_refresh_ms = 300
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
    // Every event the gateway published is in the log and the index splits; then a clean stop,
    // and the evidence API (its own binary: one metrics recorder per process).
    let published = published_events(&brokers, &topic);
    for _ in 0..600 {
        if callproof_tests::logged_entries(&store) >= published {
            break;
        }
        assert!(!processor.is_finished(), "the processor stopped");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(callproof_tests::logged_entries(&store) >= published);
    // The indexer in the processor follows the logs: stop once its splits cover them.
    for _ in 0..600 {
        if callproof_tests::published_entries(&store) >= published {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(callproof_tests::published_entries(&store) >= published);
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
    // The auditor's phase also finds one call_forwarded and one call_completed for the MCP call.
    let audit = driver.run("audit", &[("MCP_CALL_ID", &mcp_call)]).await;
    assert!(audit.contains("\"ok\":true"), "{audit}");
    idp.kill();
    evidence.kill();

    for name in [
        "inbox.png",
        "mcp.png",
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
    async fn run(&self, phase: &str, env: &[(&str, &str)]) -> String {
        let mut command = Command::new("node");
        command
            .arg(browser_dir().join("e2e.mjs"))
            .env("PHASE", phase)
            .env("CONSOLE_URL", &self.console_url)
            .env("IDP_URL", &self.idp_url)
            .env("INGRESS_URL", &self.ingress_url)
            .env("RESOURCE", RESOURCE)
            .env("SCREENSHOTS", &self.screenshots)
            .env("CHROMIUM", &self.chromium)
            .envs(env.iter().copied());
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

/// An agent speaking to the gateway's `/mcp` with plain HTTP, as the gateway's own MCP tests do
/// (`ingress/tests/gateway/mcp.rs`): the legacy handshake, then `tools/call` in its session.
struct McpAgent {
    http: reqwest::Client,
    url: String,
    token: String,
    session: Option<String>,
    next_id: u64,
}

impl McpAgent {
    const VERSION: &str = "2025-11-25";

    fn new(ingress_url: &str, token: &str) -> McpAgent {
        McpAgent {
            http: reqwest::Client::new(),
            url: format!("{ingress_url}/mcp"),
            token: token.to_string(),
            session: None,
            next_id: 1,
        }
    }

    /// Sends one message; the JSON-RPC response (the last `data:` of an event stream), if any.
    async fn send(&mut self, body: &Value) -> (reqwest::StatusCode, Option<String>, Value) {
        let mut request = self
            .http
            .post(&self.url)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .bearer_auth(&self.token)
            .body(body.to_string());
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", Self::VERSION);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let session = response
            .headers()
            .get("mcp-session-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap();
        let answer = serde_json::from_str(&text).unwrap_or_else(|_| {
            text.lines()
                .filter_map(|line| line.strip_prefix("data:"))
                .filter_map(|data| serde_json::from_str::<Value>(data.trim()).ok())
                .rfind(|message| message.get("id").is_some())
                .unwrap_or(Value::Null)
        });
        (status, session, answer)
    }

    async fn initialize(&mut self) {
        let body = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": Self::VERSION, "capabilities": {},
            "clientInfo": {"name": "browser-test-agent", "version": "1.0"}}});
        let (status, session, answer) = self.send(&body).await;
        assert_eq!(status, 200, "{answer}");
        self.session = Some(session.unwrap_or_else(|| panic!("no MCP session: {answer}")));
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(self.send(&initialized).await.0, 202);
    }

    async fn call_echo(&mut self, arguments: &Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let body = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": "crm__echo", "arguments": arguments}});
        let (status, _, answer) = self.send(&body).await;
        assert_eq!(status, 200, "{answer}");
        answer
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
