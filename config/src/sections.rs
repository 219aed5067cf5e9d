//! The sections of the deployment file. Every struct refuses unknown keys; every field that may
//! be left out has its default here, and `docs/configuration.md` documents each one.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Deserialize;

use crate::{ConfigErrorKind, Secret};

pub use callproof_masking::MaskingConfig;

/// A validation failure: the dotted key path it concerns, and why.
pub(crate) type KeyError = (String, ConfigErrorKind);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub ingress: IngressConfig,
    pub oidc: Option<OidcConfig>,
    #[serde(default)]
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub masking: MaskingConfig,
    /// Functions by name: `[functions.<name>]`.
    #[serde(default)]
    pub functions: BTreeMap<String, FunctionConfig>,
    #[serde(default)]
    pub processor: crate::ProcessorConfig,
    #[serde(default)]
    pub storage: crate::StorageConfig,
    /// Required by the processor only.
    pub log: Option<crate::LogConfig>,
    #[serde(default)]
    pub index: crate::IndexConfig,
    /// Required by the evidence API only.
    pub evidence: Option<crate::EvidenceConfig>,
    /// Required by the console only.
    pub console: Option<crate::ConsoleConfig>,
    /// The MCP gateway (`/mcp`) and its upstream MCP servers; absent, `/mcp` is not served.
    pub mcp: Option<crate::McpConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngressConfig {
    pub listen: SocketAddr,
    /// Names this gateway instance in every event it emits.
    pub instance_id: String,
    /// The URL callers reach this gateway at; used in status links.
    pub public_url: Option<String>,
    /// The largest request body any function accepts; a function may set a smaller one.
    pub max_request_bytes: usize,
    /// The largest response a function may return.
    pub max_response_bytes: usize,
    /// Upstream timeout for functions that do not set their own.
    pub default_timeout_ms: u64,
    /// The longest a caller is held for an approval, whatever its `Prefer: wait=N` asks.
    pub approval_max_wait_secs: u64,
    /// How long an approved (or overdue) call waits for the instance that received it before
    /// another instance claims it (see `docs/approvals.md`).
    pub approval_takeover_secs: u64,
    /// How long a decided call and its result stay available at `GET /v1/calls/{id}`.
    pub approval_retention_secs: u64,
    /// Invoke calls served at once (held calls included); one more is answered 429.
    pub max_in_flight: usize,
    /// Token claims that policy expressions may read as `claims.<name>` (see
    /// `docs/policy.md`); no other claim reaches them.
    pub policy_claims: Vec<String>,
    /// Threads of the async runtime serving calls; `None`: one per core but one, which is left
    /// to the Kafka client's own threads (see [`IngressConfig::runtime_workers`]).
    pub worker_threads: Option<usize>,
}

/// The most `ingress.worker_threads` a gateway may ask for.
pub const MAX_WORKER_THREADS: usize = 1_024;

impl IngressConfig {
    /// How many runtime threads serve calls. Every acknowledgement passes through librdkafka's
    /// broker and polling threads, about a third of the gateway's CPU at load: with a runtime
    /// thread per core as well, the threads preempt one another at every hop. On the 2-core
    /// bench machine one runtime thread instead of two cut the latency added at one connection
    /// from 0.97-1.06 to 0.63-0.68 ms and the gateway's CPU per call there by 30%; at 16
    /// connections the two were within the noise (bench/gateway.sh `--worker-threads`).
    pub fn runtime_workers(&self, cores: usize) -> usize {
        self.worker_threads
            .unwrap_or_else(|| cores.saturating_sub(1))
            .max(1)
    }
}

/// The longest `kafka.delivery_timeout_ms`: 15 minutes, librdkafka's own bound would allow
/// more, but a caller held that long has long given up.
pub const MAX_DELIVERY_TIMEOUT_MS: u64 = 15 * 60 * 1000;

/// The largest `ingress.max_in_flight`: far above what one process serves, and well inside what
/// a semaphore can count.
pub const MAX_IN_FLIGHT_LIMIT: usize = 1_000_000;

impl Default for IngressConfig {
    fn default() -> Self {
        IngressConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            instance_id: "ingress-1".to_string(),
            public_url: None,
            max_request_bytes: 1024 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
            default_timeout_ms: 30_000,
            approval_max_wait_secs: 60,
            approval_takeover_secs: 30,
            approval_retention_secs: 3_600,
            max_in_flight: 4_096,
            policy_claims: Vec::new(),
            worker_threads: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The issuer URL; its `/.well-known/openid-configuration` names the JWKS.
    pub issuer: String,
    /// Accepted `aud` values; a token must carry at least one.
    pub audiences: Vec<String>,
    /// Claim that holds the caller's groups; a dotted path reaches into objects
    /// (`realm_access.roles`).
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Accepted signing algorithms.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default = "default_clock_skew_secs")]
    pub clock_skew_secs: u64,
    /// How long fetched keys are trusted before they are fetched again.
    #[serde(default = "default_jwks_cache_secs")]
    pub jwks_cache_secs: u64,
    /// The least time between two fetches caused by unknown key ids, so that tokens with made-up
    /// `kid`s cannot make the gateway hammer the issuer.
    #[serde(default = "default_jwks_min_refresh_secs")]
    pub jwks_min_refresh_secs: u64,
    #[serde(default = "default_http_timeout_ms")]
    pub http_timeout_ms: u64,
}

fn default_groups_claim() -> String {
    "groups".to_string()
}
fn default_algorithms() -> Vec<String> {
    ["RS256", "ES256", "EdDSA"].map(String::from).to_vec()
}
fn default_clock_skew_secs() -> u64 {
    30
}
fn default_jwks_cache_secs() -> u64 {
    600
}
fn default_jwks_min_refresh_secs() -> u64 {
    10
}
fn default_http_timeout_ms() -> u64 {
    5_000
}

/// Algorithms the gateway can verify. Symmetric ones are absent on purpose: a gateway that
/// accepted HS256 could be fed tokens "signed" with the issuer's public key.
pub const SUPPORTED_ALGORITHMS: [&str; 6] = ["RS256", "RS384", "RS512", "ES256", "ES384", "EdDSA"];

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated.
    pub brokers: String,
    pub calls_topic: String,
    pub siem_topic: String,
    /// How long the gateway waits for the broker to acknowledge an event before it refuses the
    /// call with 503.
    pub delivery_timeout_ms: u64,
    /// Extra librdkafka properties (security.protocol, ssl.*, sasl.*, ...), passed through as
    /// written once `${ENV}` references are resolved. They may hold credentials
    /// (`sasl.password`), so their values never print.
    pub properties: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("calls_topic", &self.calls_topic)
            .field("siem_topic", &self.siem_topic)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("properties", &self.properties.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".to_string(),
            calls_topic: "callproof.calls.v1".to_string(),
            siem_topic: "callproof.siem.v1".to_string(),
            delivery_timeout_ms: 5_000,
            properties: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Where the function runs; the gateway POSTs the (masked) JSON arguments here.
    pub upstream: String,
    pub timeout_ms: Option<u64>,
    /// The largest request body this function accepts (at most `ingress.max_request_bytes`).
    pub max_request_bytes: Option<usize>,
    #[serde(default)]
    pub credential: Credential,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Just-in-time approval: when present, calls (all, or those matching `condition`) are held
    /// until approvers decide.
    pub approval: Option<ApprovalConfig>,
}

/// `[functions.<name>.approval]`: who must approve a call before it runs, and when.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// A CEL expression (`args.amount > 1000`, see [`crate::Rule`] and `docs/policy.md`);
    /// without one, every call needs approval.
    pub condition: Option<String>,
    /// Groups (from the approver's token) whose members may decide.
    pub approver_groups: Vec<String>,
    /// How many distinct approvers must approve; one deny ends the call.
    #[serde(default = "default_quorum")]
    pub quorum: u32,
    /// How long approvers have to decide.
    #[serde(default = "default_approval_expiry_secs")]
    pub expiry_secs: u64,
    /// Slack-compatible incoming webhook told of each request; a secret (`${ENV}`), since such
    /// URLs carry their own credential.
    pub webhook_url: Option<Secret>,
}

fn default_quorum() -> u32 {
    1
}
fn default_approval_expiry_secs() -> u64 {
    15 * 60
}

/// The longest an approval may stay open: a week.
pub const MAX_APPROVAL_EXPIRY_SECS: u64 = 7 * 24 * 3600;

/// Who may call a function and what is masked on the way. Deny by default: a function with no
/// `allow_*` entry can be called by nobody.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    #[serde(default)]
    pub allow_subjects: Vec<String>,
    #[serde(default)]
    pub allow_groups: Vec<String>,
    /// When not empty, a further condition on whoever the subjects, groups or rule allowed: the
    /// call must come through one of these agents (the token's RFC 8693 actor, `act.sub`, else
    /// its `client_id`). "Support staff, but only through these agents."
    #[serde(default)]
    pub allow_agents: Vec<String>,
    /// A CEL expression (see `docs/policy.md`) that allows the calls for which it holds, beside
    /// the subjects and groups listed above: a call is allowed when any of the three allows it.
    pub allow: Option<String>,
    /// Fields masked in the request before it is forwarded: JSON pointers (`/card/number`, `*`
    /// for any index) or key names matched at any depth.
    #[serde(default)]
    pub mask_request: Vec<String>,
    /// Fields masked in the response before it is returned, as `mask_request`.
    #[serde(default)]
    pub mask_response: Vec<String>,
    /// Run the PII and secret detectors over request and response bodies.
    #[serde(default = "default_true")]
    pub detect: bool,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            allow_subjects: Vec::new(),
            allow_groups: Vec::new(),
            allow_agents: Vec::new(),
            allow: None,
            mask_request: Vec::new(),
            mask_response: Vec::new(),
            detect: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// The credential the gateway adds to upstream requests; callers never see it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    #[default]
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(BearerCredential),
    /// An arbitrary header, e.g. `x-api-key`.
    Header(HeaderCredential),
    /// `Authorization: Basic base64(username:password)`.
    Basic(BasicCredential),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BearerCredential {
    pub token: Option<Secret>,
    pub token_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderCredential {
    pub name: String,
    pub value: Option<Secret>,
    pub value_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    pub username: String,
    pub password: Option<Secret>,
    pub password_file: Option<String>,
}

impl Config {
    pub(crate) fn resolve_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), KeyError> {
        for (name, function) in &mut self.functions {
            if let Some(webhook) = function
                .approval
                .as_mut()
                .and_then(|approval| approval.webhook_url.as_mut())
            {
                let key = format!("functions.{name}.approval.webhook_url");
                webhook
                    .resolve(&key, env)
                    .map_err(|kind| (key.clone(), kind))?;
            }
            resolve_credential(
                &mut function.credential,
                &format!("functions.{name}.credential"),
                env,
            )?;
        }
        // Not secrets, but deployment-specific: the quick start and containers name the broker
        // and the masking key through the environment.
        self.kafka.brokers = crate::secret::expand_env("kafka.brokers", &self.kafka.brokers, env)
            .map_err(|kind| ("kafka.brokers".to_string(), kind))?;
        for (name, value) in &mut self.kafka.properties {
            let key_path = format!("kafka.properties.{name}");
            *value = crate::secret::expand_env(&key_path, value, env)
                .map_err(|kind| (key_path.clone(), kind))?;
        }
        if let Some(hmac_key) = &self.masking.hmac_key {
            self.masking.hmac_key = Some(
                crate::secret::expand_env("masking.hmac_key", hmac_key, env)
                    .map_err(|kind| ("masking.hmac_key".to_string(), kind))?,
            );
        }
        self.resolve_processor_secrets(env)?;
        self.resolve_evidence_files(env)?;
        self.resolve_console_secrets(env)?;
        self.resolve_mcp_secrets(env)?;
        Ok(())
    }

    /// Checks values and how the sections fit together; no I/O.
    pub fn validate(&self) -> Result<(), KeyError> {
        let invalid = |key: &str, reason: String| {
            (
                key.to_string(),
                ConfigErrorKind::Invalid {
                    key: key.to_string(),
                    reason,
                },
            )
        };
        let ingress = &self.ingress;
        if ingress.instance_id.trim().is_empty() {
            return Err(invalid("ingress.instance_id", "must not be empty".into()));
        }
        if ingress.max_request_bytes == 0 {
            return Err(invalid(
                "ingress.max_request_bytes",
                "must be positive".into(),
            ));
        }
        if ingress.max_response_bytes == 0 {
            return Err(invalid(
                "ingress.max_response_bytes",
                "must be positive".into(),
            ));
        }
        if ingress.max_in_flight == 0 || ingress.max_in_flight > MAX_IN_FLIGHT_LIMIT {
            return Err(invalid(
                "ingress.max_in_flight",
                format!("must be between 1 and {MAX_IN_FLIGHT_LIMIT}"),
            ));
        }
        if let Some(workers) = ingress.worker_threads
            && (workers == 0 || workers > MAX_WORKER_THREADS)
        {
            return Err(invalid(
                "ingress.worker_threads",
                format!("must be between 1 and {MAX_WORKER_THREADS}"),
            ));
        }
        if ingress.default_timeout_ms == 0 {
            return Err(invalid(
                "ingress.default_timeout_ms",
                "must be positive".into(),
            ));
        }
        if let Some(oidc) = &self.oidc {
            if !(oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://")) {
                return Err(invalid("oidc.issuer", "must be an http(s) URL".into()));
            }
            if oidc.audiences.is_empty() {
                return Err(invalid(
                    "oidc.audiences",
                    "must name at least one audience".into(),
                ));
            }
            if oidc.http_timeout_ms == 0 {
                return Err(invalid("oidc.http_timeout_ms", "must be positive".into()));
            }
            if oidc.jwks_cache_secs == 0 {
                return Err(invalid("oidc.jwks_cache_secs", "must be positive".into()));
            }
            // Zero would let every token with a made-up key id cause a fetch from the issuer.
            if oidc.jwks_min_refresh_secs == 0 {
                return Err(invalid(
                    "oidc.jwks_min_refresh_secs",
                    "must be positive".into(),
                ));
            }
            if oidc.algorithms.is_empty() {
                return Err(invalid("oidc.algorithms", "must not be empty".into()));
            }
            if let Some(algorithm) = oidc
                .algorithms
                .iter()
                .find(|algorithm| !SUPPORTED_ALGORITHMS.contains(&algorithm.as_str()))
            {
                return Err(invalid(
                    "oidc.algorithms",
                    format!(
                        "names {algorithm:?}, which is not one of {}",
                        SUPPORTED_ALGORITHMS.join(", ")
                    ),
                ));
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers", "must not be empty".into()));
        }
        // librdkafka's own bounds for `message.timeout.ms`; 0 would mean "wait forever", the
        // opposite of failing closed.
        if !(1..=MAX_DELIVERY_TIMEOUT_MS).contains(&self.kafka.delivery_timeout_ms) {
            return Err(invalid(
                "kafka.delivery_timeout_ms",
                format!("must be between 1 and {MAX_DELIVERY_TIMEOUT_MS}"),
            ));
        }
        for (key, topic) in [
            ("kafka.calls_topic", &self.kafka.calls_topic),
            ("kafka.siem_topic", &self.kafka.siem_topic),
        ] {
            if !is_topic_name(topic) {
                return Err(invalid(
                    key,
                    "is not a Kafka topic name: 1 to 249 of letters, digits, '.', '_' and '-'"
                        .into(),
                ));
            }
        }
        // The processor would read its own SIEM records back as undecodable events, forever.
        if self.kafka.calls_topic == self.kafka.siem_topic {
            return Err(invalid(
                "kafka.siem_topic",
                "must differ from kafka.calls_topic".into(),
            ));
        }
        // The audit guarantees rest on these; they are not for the deployment to weaken.
        for reserved in ["acks", "enable.idempotence", "bootstrap.servers"] {
            if self.kafka.properties.contains_key(reserved) {
                return Err(invalid(
                    "kafka.properties",
                    format!("must not set `{reserved}`: callproof sets it itself"),
                ));
            }
        }
        let vocabulary = crate::policy::Vocabulary {
            claims: &ingress.policy_claims,
        };
        for (name, function) in &self.functions {
            let at = |key: &str| format!("functions.{name}.{key}");
            if !is_function_name(name) {
                return Err(invalid(
                    &format!("functions.{name}"),
                    "is not a valid function name: use letters, digits, '_', '-' and '.'".into(),
                ));
            }
            if !(function.upstream.starts_with("http://")
                || function.upstream.starts_with("https://"))
            {
                return Err(invalid(&at("upstream"), "must be an http(s) URL".into()));
            }
            if function.timeout_ms == Some(0) {
                return Err(invalid(&at("timeout_ms"), "must be positive".into()));
            }
            if let Some(limit) = function.max_request_bytes
                && (limit == 0 || limit > ingress.max_request_bytes)
            {
                return Err(invalid(
                    &at("max_request_bytes"),
                    format!(
                        "must be between 1 and ingress.max_request_bytes ({})",
                        ingress.max_request_bytes
                    ),
                ));
            }
            check_credential(&at("credential"), &function.credential)?;
            check_policy(
                &format!("functions.{name}"),
                &function.policy,
                function.approval.as_ref(),
                vocabulary,
            )?;
        }
        for (key, value) in [
            (
                "ingress.approval_max_wait_secs",
                ingress.approval_max_wait_secs,
            ),
            (
                "ingress.approval_takeover_secs",
                ingress.approval_takeover_secs,
            ),
            (
                "ingress.approval_retention_secs",
                ingress.approval_retention_secs,
            ),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be positive".into()));
            }
        }
        self.validate_processor()?;
        self.validate_evidence()?;
        self.validate_console()?;
        self.validate_mcp()?;
        Ok(())
    }
}

/// Checks one `approval` table; errors name the key under `functions.<name>.`.
fn validate_approval(approval: &ApprovalConfig) -> Result<(), (&'static str, String)> {
    if approval.approver_groups.is_empty()
        || approval
            .approver_groups
            .iter()
            .any(|group| group.trim().is_empty())
    {
        return Err((
            "approval.approver_groups",
            "must name at least one group, none of them empty".into(),
        ));
    }
    if approval.quorum == 0 || approval.quorum > 100 {
        return Err(("approval.quorum", "must be between 1 and 100".into()));
    }
    if approval.expiry_secs == 0 || approval.expiry_secs > MAX_APPROVAL_EXPIRY_SECS {
        return Err((
            "approval.expiry_secs",
            format!("must be between 1 and {MAX_APPROVAL_EXPIRY_SECS} (a week)"),
        ));
    }
    // `webhook_url` is a secret, usually from the environment: the gateway checks it is an
    // http(s) URL when it starts, with an error that does not repeat it.
    Ok(())
}

pub(crate) fn invalid_key(key: &str, reason: String) -> KeyError {
    (
        key.to_string(),
        ConfigErrorKind::Invalid {
            key: key.to_string(),
            reason,
        },
    )
}

/// Checks a credential table at `at` (`functions.<name>.credential`, `mcp.servers.<name>.credential`).
pub(crate) fn check_credential(at: &str, credential: &Credential) -> Result<(), KeyError> {
    if let Credential::Header(header) = credential
        && http_header_name_is_invalid(&header.name)
    {
        return Err(invalid_key(
            &format!("{at}.name"),
            format!("{:?} is not a valid HTTP header name", header.name),
        ));
    }
    Ok(())
}

/// Checks a `policy` table and its `approval` beside it, under `prefix`
/// (`functions.<name>`, `mcp.servers.<server>.tools.<tool>`).
pub(crate) fn check_policy(
    prefix: &str,
    policy: &PolicyConfig,
    approval: Option<&ApprovalConfig>,
    vocabulary: crate::policy::Vocabulary<'_>,
) -> Result<(), KeyError> {
    let at = |key: &str| format!("{prefix}.{key}");
    for (key, rules) in [
        ("policy.mask_request", &policy.mask_request),
        ("policy.mask_response", &policy.mask_response),
    ] {
        callproof_masking::FieldRules::parse(rules)
            .map_err(|error| invalid_key(&at(key), error.to_string()))?;
    }
    if policy
        .allow_agents
        .iter()
        .any(|agent| agent.trim().is_empty())
    {
        return Err(invalid_key(
            &at("policy.allow_agents"),
            "must not contain an empty name".into(),
        ));
    }
    if let Some(source) = &policy.allow {
        check_rule(&at("policy.allow"), source, vocabulary)?;
    }
    if let Some(approval) = approval {
        if let Some(source) = &approval.condition {
            check_rule(&at("approval.condition"), source, vocabulary)?;
        }
        validate_approval(approval).map_err(|(key, reason)| invalid_key(&at(key), reason))?;
    }
    Ok(())
}

/// Resolves the secret of a credential table at `at`.
pub(crate) fn resolve_credential(
    credential: &mut Credential,
    at: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), KeyError> {
    match credential {
        Credential::None => Ok(()),
        Credential::Bearer(bearer) => {
            resolve_one(&mut bearer.token, &bearer.token_file, at, "token", env)
        }
        Credential::Header(header) => {
            resolve_one(&mut header.value, &header.value_file, at, "value", env)
        }
        Credential::Basic(basic) => resolve_one(
            &mut basic.password,
            &basic.password_file,
            at,
            "password",
            env,
        ),
    }
}

/// Compiles a policy expression as the gateway will, refusing it with its position.
fn check_rule(
    key: &str,
    source: &str,
    vocabulary: crate::policy::Vocabulary<'_>,
) -> Result<(), KeyError> {
    crate::Rule::compile(source, vocabulary)
        .map(drop)
        .map_err(|error| {
            (
                key.to_string(),
                ConfigErrorKind::Rule {
                    key: key.to_string(),
                    error,
                },
            )
        })
}

fn resolve_one(
    value: &mut Option<Secret>,
    file: &Option<String>,
    at: &str,
    key: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), KeyError> {
    let key_path = format!("{at}.{key}");
    let result = match (value.as_mut(), file) {
        (Some(secret), None) => secret.resolve(&key_path, env),
        (None, Some(path)) => Secret::from_file(&format!("{key_path}_file"), path).map(|secret| {
            *value = Some(secret);
        }),
        (Some(_), Some(_)) => Err(ConfigErrorKind::Invalid {
            key: key_path.clone(),
            reason: format!("and `{key}_file` are both set; set one"),
        }),
        (None, None) => Err(ConfigErrorKind::Invalid {
            key: key_path.clone(),
            reason: format!("is missing: set `{key}` (a value or ${{ENV}}) or `{key}_file`"),
        }),
    };
    result.map_err(|kind| (key_path, kind))
}

/// Kafka's own rule for topic names (`.` and `..` are refused by the broker as well).
fn is_topic_name(name: &str) -> bool {
    (1..=249).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

pub fn is_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'))
}

fn http_header_name_is_invalid(name: &str) -> bool {
    name.is_empty()
        || !name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte))
}

#[cfg(test)]
mod approval_tests {
    use crate::{Config, ConfigErrorKind};

    const FUNCTION: &str = r#"
[functions.transfer]
upstream = "http://127.0.0.1:9100/transfer"

[functions.transfer.approval]
approver_groups = ["treasury"]
"#;

    fn load(extra: &str) -> Result<Config, crate::ConfigError> {
        let source = format!("{FUNCTION}{extra}");
        let source = format!("{source}[oidc]\nissuer = \"http://i\"\naudiences = [\"a\"]\n");
        Config::from_toml_with_env(&source, "deploy.toml", crate::Service::Ingress, &|_| {
            Some("https://hooks.example.com/T000/secret-path".into())
        })
    }

    #[test]
    fn approval_defaults_and_secret_webhook() {
        let config = load("webhook_url = \"${HOOK}\"\n").unwrap();
        let approval = config.functions["transfer"].approval.clone().unwrap();
        assert_eq!(approval.quorum, 1);
        assert_eq!(approval.expiry_secs, 900);
        assert!(approval.condition.is_none());
        assert!(!format!("{config:?}").contains("secret-path"));
        assert_eq!(config.ingress.approval_max_wait_secs, 60);
    }

    #[test]
    fn a_bad_condition_is_refused_at_load_with_key_line_and_column() {
        let error = load("condition = \"args.amount >> 1000\"\n").unwrap_err();
        assert_eq!(error.line, Some(7), "{error}");
        let ConfigErrorKind::Rule { key, error: rule } = &error.kind else {
            panic!("{error}");
        };
        assert_eq!(key, "functions.transfer.approval.condition");
        assert_eq!((rule.line, rule.column), (1, 14), "{error}");
        assert!(
            error.to_string().starts_with(
                "deploy.toml:7: `functions.transfer.approval.condition` at column 14 of the \
                 expression: does not parse"
            ),
            "{error}"
        );
        for (extra, key) in [
            ("quorum = 0\n", "quorum"),
            ("expiry_secs = 0\n", "expiry_secs"),
            ("condition = \"1000\"\n", "condition"),
        ] {
            let error = load(extra).unwrap_err().to_string();
            assert!(error.contains(&format!("approval.{key}")), "{error}");
        }
        let empty = Config::from_toml(
            "[functions.f]\nupstream = \"http://x\"\napproval = { approver_groups = [] }\n",
            "deploy.toml",
            crate::Service::Ingress,
        )
        .unwrap_err();
        assert!(empty.to_string().contains("approver_groups"), "{empty}");
    }
}
