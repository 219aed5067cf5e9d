//! `[mcp]`: callproof as an MCP gateway. Agents speak MCP to `/mcp`; the gateway is the MCP client
//! of each `[mcp.servers.<name>]` and offers their tools as `<server>__<tool>`, each under its
//! own policy (deny by default), masking and approval, as functions are.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::sections::{
    ApprovalConfig, Config, Credential, KeyError, PolicyConfig, check_credential, check_policy,
    invalid_key, resolve_credential,
};

/// Separates the server from the tool in the names agents see: `crm__get_customer`.
pub const TOOL_NAME_SEPARATOR: &str = "__";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpConfig {
    /// This endpoint's own resource URI (RFC 8707/9728), the audience a token must carry to be
    /// accepted at `/mcp`. Default: `ingress.public_url` + `/mcp`.
    pub resource: Option<String>,
    /// Browser origins allowed to call `/mcp`. A request with an `Origin` header that is not
    /// listed gets 403 (DNS rebinding); a request without one (agents, CLIs) passes.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Scopes named in the protected resource metadata and in `WWW-Authenticate`.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The largest JSON-RPC message accepted. Default: `ingress.max_request_bytes`.
    pub max_message_bytes: Option<usize>,
    /// A session unused this long is ended (and its upstream sessions with it).
    #[serde(default = "default_session_idle_secs")]
    pub session_idle_secs: u64,
    /// How many sessions one caller may hold at once; the oldest idle one makes room.
    #[serde(default = "default_max_sessions_per_caller")]
    pub max_sessions_per_caller: usize,
    /// How long a server's tool list is used before it is listed again.
    #[serde(default = "default_catalog_ttl_secs")]
    pub catalog_ttl_secs: u64,
    /// Tools per `tools/list` page.
    #[serde(default = "default_list_page_size")]
    pub list_page_size: usize,
    /// How long a `tools/call` that needs approval holds the agent before answering that it is
    /// pending (at most `ingress.approval_max_wait_secs`, which is also the default).
    pub hold_wait_secs: Option<u64>,
    /// How often a held call tells the agent it is still waiting (a progress notification when
    /// the agent asked for progress, else an SSE comment).
    #[serde(default = "default_hold_progress_secs")]
    pub hold_progress_secs: u64,
    /// Text for the agent in the `initialize` and `server/discover` answers.
    pub instructions: Option<String>,
    /// Upstream MCP servers by name: `[mcp.servers.<name>]`.
    #[serde(default)]
    pub servers: BTreeMap<String, McpServerConfig>,
}

fn default_session_idle_secs() -> u64 {
    30 * 60
}
fn default_max_sessions_per_caller() -> usize {
    32
}
fn default_catalog_ttl_secs() -> u64 {
    300
}
fn default_list_page_size() -> usize {
    100
}
fn default_hold_progress_secs() -> u64 {
    10
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The server's Streamable HTTP endpoint.
    pub url: String,
    /// What the gateway presents to the server; the agent's token never goes upstream.
    #[serde(default)]
    pub credential: Credential,
    /// The protocol revision to speak to it.
    #[serde(default)]
    pub protocol: McpProtocol,
    /// Bounds one `tools/call`. Default: `ingress.default_timeout_ms`.
    pub timeout_ms: Option<u64>,
    /// Bounds the handshake and each `tools/list` page.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Largest answer (JSON body or SSE event) taken from it. Default:
    /// `ingress.max_response_bytes`.
    pub max_response_bytes: Option<usize>,
    /// The policy of the server's tools that have no `tools.<tool>` table; absent, those tools
    /// are offered to nobody.
    pub default: Option<McpToolConfig>,
    /// Per-tool policy and approval, by the upstream's tool name. A tool's table replaces
    /// `default` entirely.
    #[serde(default)]
    pub tools: BTreeMap<String, McpToolConfig>,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum McpProtocol {
    /// `server/discover` (2026-07-28), falling back to the `initialize` handshake.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "2026-07-28")]
    V2026_07_28,
    #[serde(rename = "2025-11-25")]
    V2025_11_25,
    #[serde(rename = "2025-06-18")]
    V2025_06_18,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpToolConfig {
    #[serde(default)]
    pub policy: PolicyConfig,
    pub approval: Option<ApprovalConfig>,
}

/// Server names are kept apart from tool names by [`TOOL_NAME_SEPARATOR`], so they hold no `_`.
pub fn is_mcp_server_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
}

impl McpConfig {
    /// The audience tokens must carry at `/mcp`.
    pub fn resource_uri(&self, public_url: &str) -> String {
        self.resource
            .clone()
            .unwrap_or_else(|| format!("{}/mcp", public_url.trim_end_matches('/')))
    }
}

impl Config {
    pub(crate) fn resolve_mcp_secrets(
        &mut self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), KeyError> {
        let Some(mcp) = &mut self.mcp else {
            return Ok(());
        };
        for (name, server) in &mut mcp.servers {
            resolve_credential(
                &mut server.credential,
                &format!("mcp.servers.{name}.credential"),
                env,
            )?;
            for (tool, config) in server.default.iter_mut().map(|c| ("default", c)).chain(
                server
                    .tools
                    .iter_mut()
                    .map(|(tool, config)| (tool.as_str(), config)),
            ) {
                if let Some(webhook) = config
                    .approval
                    .as_mut()
                    .and_then(|approval| approval.webhook_url.as_mut())
                {
                    let key = format!("mcp.servers.{name}.tools.{tool}.approval.webhook_url");
                    webhook
                        .resolve(&key, env)
                        .map_err(|kind| (key.clone(), kind))?;
                }
            }
        }
        Ok(())
    }

    /// Forgets the upstream MCP credentials and webhooks (all but the gateway).
    pub(crate) fn drop_mcp_secrets(&mut self) {
        let Some(mcp) = &mut self.mcp else {
            return;
        };
        for server in mcp.servers.values_mut() {
            server.credential = Credential::None;
            for tool in server.default.iter_mut().chain(server.tools.values_mut()) {
                if let Some(approval) = &mut tool.approval {
                    approval.webhook_url = None;
                }
            }
        }
    }

    pub(crate) fn validate_mcp(&self) -> Result<(), KeyError> {
        let Some(mcp) = &self.mcp else {
            return Ok(());
        };
        if let Some(resource) = &mcp.resource {
            let absolute = resource.starts_with("https://") || resource.starts_with("http://");
            if !absolute || resource.contains('#') {
                return Err(invalid_key(
                    "mcp.resource",
                    "must be an absolute http(s) URI without a fragment (RFC 8707)".into(),
                ));
            }
        }
        if let Some(origin) = mcp
            .allowed_origins
            .iter()
            .find(|origin| !(origin.starts_with("https://") || origin.starts_with("http://")))
        {
            return Err(invalid_key(
                "mcp.allowed_origins",
                format!("{origin:?} is not an origin such as https://claude.ai"),
            ));
        }
        if let Some(limit) = mcp.max_message_bytes
            && (limit == 0 || limit > self.ingress.max_request_bytes)
        {
            return Err(invalid_key(
                "mcp.max_message_bytes",
                format!(
                    "must be between 1 and ingress.max_request_bytes ({})",
                    self.ingress.max_request_bytes
                ),
            ));
        }
        for (key, value) in [
            ("mcp.session_idle_secs", mcp.session_idle_secs),
            ("mcp.catalog_ttl_secs", mcp.catalog_ttl_secs),
            ("mcp.hold_progress_secs", mcp.hold_progress_secs),
            (
                "mcp.max_sessions_per_caller",
                mcp.max_sessions_per_caller as u64,
            ),
        ] {
            if value == 0 {
                return Err(invalid_key(key, "must be positive".into()));
            }
        }
        if mcp.list_page_size == 0 || mcp.list_page_size > 1_000 {
            return Err(invalid_key(
                "mcp.list_page_size",
                "must be between 1 and 1000".into(),
            ));
        }
        if let Some(wait) = mcp.hold_wait_secs
            && wait > self.ingress.approval_max_wait_secs
        {
            return Err(invalid_key(
                "mcp.hold_wait_secs",
                format!(
                    "must be at most ingress.approval_max_wait_secs ({})",
                    self.ingress.approval_max_wait_secs
                ),
            ));
        }
        let vocabulary = crate::policy::Vocabulary {
            claims: &self.ingress.policy_claims,
        };
        for (name, server) in &mcp.servers {
            let at = |key: &str| format!("mcp.servers.{name}.{key}");
            if !is_mcp_server_name(name) {
                return Err(invalid_key(
                    &format!("mcp.servers.{name}"),
                    "is not a valid server name: 1 to 32 of lowercase letters, digits and '-' \
                     (no '_': tools are offered as <server>__<tool>)"
                        .into(),
                ));
            }
            if !(server.url.starts_with("http://") || server.url.starts_with("https://")) {
                return Err(invalid_key(&at("url"), "must be an http(s) URL".into()));
            }
            for (key, value) in [
                ("timeout_ms", server.timeout_ms.unwrap_or(1)),
                ("connect_timeout_ms", server.connect_timeout_ms),
                (
                    "max_response_bytes",
                    server.max_response_bytes.unwrap_or(1) as u64,
                ),
            ] {
                if value == 0 {
                    return Err(invalid_key(&at(key), "must be positive".into()));
                }
            }
            check_credential(&at("credential"), &server.credential)?;
            if let Some(default) = &server.default {
                check_policy(
                    &at("default"),
                    &default.policy,
                    default.approval.as_ref(),
                    vocabulary,
                )?;
            }
            for (tool, config) in &server.tools {
                check_policy(
                    &at(&format!("tools.{tool}")),
                    &config.policy,
                    config.approval.as_ref(),
                    vocabulary,
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::{Config, ConfigErrorKind, Service};

    const BASE: &str = r#"
[ingress]
public_url = "https://gw.example.com"
[oidc]
issuer = "https://idp.example.com"
audiences = ["callproof"]
[kafka]
brokers = "localhost:9092"
"#;

    fn load(extra: &str, service: Service) -> Result<Config, crate::ConfigError> {
        let source = format!("{BASE}\n{extra}");
        Config::from_toml_with_env(&source, "test.toml", service, &|name| match name {
            "CRM_TOKEN" => Some("crm-secret".to_string()),
            _ => None,
        })
    }

    const SERVERS: &str = r#"
[mcp]
[mcp.servers.crm]
url = "https://mcp.crm.internal/mcp"
credential = { kind = "bearer", token = "${CRM_TOKEN}" }
protocol = "2025-11-25"
[mcp.servers.crm.default.policy]
allow_groups = ["support"]
[mcp.servers.crm.tools.refund.policy]
allow_groups = ["payments"]
allow_agents = ["claude-code"]
mask_request = ["/card"]
[mcp.servers.crm.tools.refund.approval]
condition = "args.amount > 1000"
approver_groups = ["treasury"]
"#;

    #[test]
    fn servers_tools_and_the_resource_are_read() {
        let config = load(SERVERS, Service::Ingress).unwrap();
        let mcp = config.mcp.as_ref().unwrap();
        assert_eq!(
            mcp.resource_uri("https://gw.example.com"),
            "https://gw.example.com/mcp"
        );
        let crm = &mcp.servers["crm"];
        assert_eq!(crm.protocol, super::McpProtocol::V2025_11_25);
        assert_eq!(crm.tools["refund"].policy.allow_agents, ["claude-code"]);
        let crate::Credential::Bearer(bearer) = &crm.credential else {
            panic!("bearer credential expected");
        };
        assert_eq!(bearer.token.as_ref().unwrap().expose(), "crm-secret");
    }

    #[test]
    fn only_the_gateway_keeps_upstream_mcp_credentials() {
        for service in [Service::Processor, Service::Evidence] {
            // The variable is not set for them: they must not even look it up.
            let source = format!("{BASE}\n{SERVERS}");
            let config = Config::from_toml_with_env(&source, "t.toml", service, &|_| None);
            let Ok(config) = config else {
                // Other sections these services require are absent here; what matters is that
                // the failure is not about the MCP credential.
                let error = config.unwrap_err().to_string();
                assert!(!error.contains("CRM_TOKEN"), "{error}");
                continue;
            };
            let crm = &config.mcp.as_ref().unwrap().servers["crm"];
            assert!(matches!(crm.credential, crate::Credential::None));
        }
    }

    #[test]
    fn bad_mcp_tables_are_refused_with_their_key() {
        for (extra, key) in [
            (
                "[mcp]\n[mcp.servers.my_crm]\nurl = \"https://x/mcp\"",
                "mcp.servers.my_crm",
            ),
            (
                "[mcp]\n[mcp.servers.crm]\nurl = \"ftp://x/mcp\"",
                "mcp.servers.crm.url",
            ),
            ("[mcp]\nresource = \"https://gw/mcp#frag\"", "mcp.resource"),
            (
                "[mcp]\nallowed_origins = [\"claude.ai\"]",
                "mcp.allowed_origins",
            ),
            ("[mcp]\nhold_wait_secs = 100000", "mcp.hold_wait_secs"),
            (
                "[mcp]\n[mcp.servers.crm]\nurl = \"https://x/mcp\"\n[mcp.servers.crm.tools.t.policy]\nallow = \"args.\"",
                "mcp.servers.crm.tools.t.policy.allow",
            ),
            (
                "[mcp]\n[mcp.servers.crm]\nurl = \"https://x/mcp\"\n[mcp.servers.crm.tools.t.approval]\napprover_groups = []",
                "mcp.servers.crm.tools.t.approval.approver_groups",
            ),
        ] {
            let error = load(extra, Service::Ingress).unwrap_err();
            let named = match &error.kind {
                ConfigErrorKind::Invalid { key: named, .. }
                | ConfigErrorKind::Rule { key: named, .. } => named.clone(),
                other => panic!("{extra}: unexpected {other:?}"),
            };
            assert_eq!(named, key, "{extra}: {error}");
            assert!(error.line.is_some(), "{extra}: {error} has no line");
        }
    }
}
