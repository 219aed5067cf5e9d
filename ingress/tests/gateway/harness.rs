use std::time::Duration;

use callproof_config::{Config, Service};
use callproof_schemas::{CallEvent, EventKind};
use callproof_tests::broker;
use callproof_tests::function_service::FunctionService;
use callproof_tests::issuer::TestIssuer;
use callproof_tests::webhook::WebhookReceiver;
use serde_json::Value;

/// The credential the gateway holds for the `echo` function; must reach it and nothing else.
pub const UPSTREAM_TOKEN: &str = "upstream-secret-token-9f8e7d";
pub const API_KEY: &str = "api-key-secret-1a2b3c";
pub const BASIC_PASSWORD: &str = "basic-secret-pw-77";

pub struct Harness {
    pub issuer: TestIssuer,
    pub functions: FunctionService,
    pub webhook: WebhookReceiver,
    pub url: String,
    pub topic: String,
    pub brokers: String,
    pub client: reqwest::Client,
}

pub struct Answer {
    pub status: u16,
    pub call_id: Option<String>,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::start_on(broker::bootstrap()).await
    }

    /// Starts a gateway publishing to `brokers`, with the functions every test uses.
    pub async fn start_on(brokers: String) -> Harness {
        Harness::start_configured(brokers, "", "", "").await
    }

    /// As [`Harness::start_on`], with more tables at the end of the file (`[mcp]`).
    pub async fn start_on_with_tables(brokers: String, tables: &str) -> Harness {
        Harness::start_configured(brokers, "", "", tables).await
    }

    /// As [`Harness::start`], with extra lines for the `[ingress]` and `[oidc]` sections.
    pub async fn start_with(ingress_extra: &str, oidc_extra: &str) -> Harness {
        Harness::start_configured(broker::bootstrap(), ingress_extra, oidc_extra, "").await
    }

    async fn start_configured(
        brokers: String,
        ingress_extra: &str,
        oidc_extra: &str,
        tables: &str,
    ) -> Harness {
        let issuer = TestIssuer::start().await.unwrap();
        let functions = FunctionService::start().await.unwrap();
        let webhook = WebhookReceiver::start().await.unwrap();
        let topic = broker::unique_name("calls");
        broker::create_topic(&brokers, &topic, 3).await.unwrap();
        let upstream = &functions.url;
        let source = format!(
            r#"
[ingress]
listen = "127.0.0.1:0"
instance_id = "gw-test"
max_request_bytes = 65536
approval_max_wait_secs = 20
approval_takeover_secs = 2
policy_claims = ["tenant"]
{ingress_extra}

[oidc]
issuer = "{issuer}"
audiences = ["callproof"]
jwks_min_refresh_secs = 2
{oidc_extra}

[kafka]
brokers = "{brokers}"
calls_topic = "{topic}"
delivery_timeout_ms = 3000

# The processor's and the evidence API's secrets, in the same file as a deployment may keep
# them: the gateway must start without them (the variables and the file do not exist).
[storage]
url = "s3://evidence/logs"
options = {{ aws_secret_access_key = "${{STORE_WRITER_SECRET}}" }}

[log]
signing_key_file = "/nonexistent/callproof/log-signing.key"

[evidence]
verifier_key = "example.com/log+1a2b3c4d+AQsV8bnJmO9QA3fWq0fKqKh7JdVmb9cNE8lqEGpu6UTh"
storage_options = {{ aws_secret_access_key = "${{STORE_READER_SECRET}}" }}

[functions.echo]
upstream = "{upstream}/echo"
credential = {{ kind = "bearer", token = "${{UPSTREAM_TOKEN}}" }}
[functions.echo.policy]
allow_groups = ["support"]
allow_subjects = ["carol"]
mask_request = ["/ssn", "password"]
mask_response = ["internal_note"]

[functions.keyed]
upstream = "{upstream}/echo"
credential = {{ kind = "header", name = "x-api-key", value = "${{API_KEY}}" }}
policy = {{ allow_groups = ["support"] }}

[functions.basic]
upstream = "{upstream}/echo"
credential = {{ kind = "basic", username = "svc", password = "${{BASIC_PASSWORD}}" }}
policy = {{ allow_groups = ["support"] }}

[functions.small]
upstream = "{upstream}/echo"
max_request_bytes = 64
policy = {{ allow_groups = ["support"] }}

[functions.slow]
upstream = "{upstream}/slow"
timeout_ms = 300
policy = {{ allow_groups = ["support"] }}

[functions.slow_but_patient]
upstream = "{upstream}/slow"
timeout_ms = 20000
policy = {{ allow_groups = ["support"] }}

[functions.down]
upstream = "http://127.0.0.1:9/nothing-listens-here"
policy = {{ allow_groups = ["support"] }}

[functions.fail]
upstream = "{upstream}/fail"
policy = {{ allow_groups = ["support"] }}

[functions.text]
upstream = "{upstream}/text"
policy = {{ allow_groups = ["support"] }}

[functions.admin_only]
upstream = "{upstream}/echo"
policy = {{ allow_groups = ["admins"] }}

[functions.transfer]
upstream = "{upstream}/echo"
policy = {{ allow_groups = ["support"], mask_request = ["/iban"] }}
[functions.transfer.approval]
condition = 'args.amount > 1000 || (has(args.env) && args.env == "prod")'
approver_groups = ["treasury"]
webhook_url = "${{WEBHOOK_URL}}"

# CEL allow rules (docs/policy.md): over the arguments, decided once the body is read; over
# the caller and a selected claim, decided before it is.
[functions.small_refund]
upstream = "{upstream}/echo"
policy = {{ allow = 'args.amount <= 100' }}

[functions.agents_of_acme]
upstream = "{upstream}/echo"
policy = {{ allow = 'has(principal.actor) && principal.actor.sub.startsWith("agent-") && claims.tenant == "acme"' }}

[functions.wire]
upstream = "{upstream}/echo"
policy = {{ allow_groups = ["support"] }}
approval = {{ approver_groups = ["treasury", "risk"], quorum = 2 }}

[functions.quick_expiry]
upstream = "{upstream}/echo"
policy = {{ allow_groups = ["support"] }}
approval = {{ approver_groups = ["treasury"], expiry_secs = 2 }}

{tables}
"#,
            issuer = issuer.url,
        );
        let env = |name: &str| match name {
            "UPSTREAM_TOKEN" => Some(UPSTREAM_TOKEN.to_string()),
            "API_KEY" => Some(API_KEY.to_string()),
            "BASIC_PASSWORD" => Some(BASIC_PASSWORD.to_string()),
            "WEBHOOK_URL" => Some(webhook.url.clone()),
            _ => None,
        };
        let config =
            Config::from_toml_with_env(&source, "test.toml", Service::Ingress, &env).unwrap();
        let app = callproof_ingress::App::build(config).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let router = callproof_ingress::router(app.state);
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Harness {
            issuer,
            functions,
            webhook,
            url,
            topic,
            brokers,
            client: reqwest::Client::new(),
        }
    }

    pub async fn invoke(&self, function: &str, token: Option<&str>, body: &str) -> Answer {
        let mut request = self
            .client
            .post(format!("{}/v1/functions/{function}/invoke", self.url))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let call_id = headers
            .get("x-callproof-call-id")
            .and_then(|value| value.to_str().ok())
            .map(str::to_string);
        let text = response.text().await.unwrap();
        Answer {
            status,
            call_id,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
            headers,
        }
    }

    /// A call with a `Prefer: wait=N` header.
    pub async fn invoke_waiting(
        &self,
        function: &str,
        token: &str,
        body: &str,
        wait_secs: u64,
    ) -> Answer {
        let request = self
            .client
            .post(format!("{}/v1/functions/{function}/invoke", self.url))
            .header("content-type", "application/json")
            .header("prefer", format!("wait={wait_secs}"))
            .bearer_auth(token)
            .body(body.to_string());
        answer(request).await
    }

    /// `GET {path}` with a bearer token.
    pub async fn get(&self, path: &str, token: &str) -> Answer {
        answer(
            self.client
                .get(format!("{}{path}", self.url))
                .bearer_auth(token),
        )
        .await
    }

    /// `POST {path}` of a JSON body with a bearer token.
    pub async fn post(&self, path: &str, token: &str, body: &Value) -> Answer {
        answer(
            self.client
                .post(format!("{}{path}", self.url))
                .bearer_auth(token)
                .json(body),
        )
        .await
    }

    /// A call by alice (group support) with `arguments`.
    pub async fn invoke_as_alice(&self, function: &str, arguments: &Value) -> Answer {
        let token = self.issuer.token("alice", &["support"]);
        self.invoke(function, Some(&token), &arguments.to_string())
            .await
    }

    /// The events of one call, read back from the broker with an independent consumer.
    pub fn events_of(&self, call_id: &str, expected: usize) -> Vec<CallEvent> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let events: Vec<CallEvent> = self
                .all_raw_events()
                .into_iter()
                .map(|(_, payload)| callproof_schemas::decode(&payload).unwrap())
                .filter(|event| event.call_id == call_id)
                .collect();
            if events.len() >= expected || std::time::Instant::now() > deadline {
                return events;
            }
        }
    }

    /// Every event on the harness's topic, decoded (a message that is not one is left out).
    pub fn all_events(&self) -> Vec<CallEvent> {
        self.all_raw_events()
            .into_iter()
            .filter_map(|(_, payload)| callproof_schemas::decode(&payload).ok())
            .collect()
    }

    /// Every message on the harness's topic: key and raw payload.
    pub fn all_raw_events(&self) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
        broker::consume(
            &self.brokers,
            &self.topic,
            usize::MAX,
            Duration::from_secs(3),
        )
        .unwrap()
        .into_iter()
        .map(|message| (message.key, message.payload))
        .collect()
    }
}

/// Sends a request and reads the answer as the tests look at it.
pub async fn answer(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let call_id = headers
        .get("x-callproof-call-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let text = response.text().await.unwrap();
    Answer {
        status,
        call_id,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
        headers,
    }
}

pub fn kinds(events: &[CallEvent]) -> Vec<EventKind> {
    events.iter().map(|event| event.kind).collect()
}

/// The answer's error code.
pub fn error_code(answer: &Answer) -> &str {
    answer.body["error"]["code"].as_str().unwrap_or("")
}
