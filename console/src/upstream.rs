//! The gateway and the evidence API, called with the signed-in person's own access token. The
//! console adds no rule of its own: what they refuse, it shows with their message.

use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ConsoleError;

pub const GATEWAY: &str = "the gateway";
pub const EVIDENCE: &str = "the evidence API";

pub struct Upstream {
    http: reqwest::Client,
    pub ingress_url: String,
    pub evidence_url: Option<String>,
}

/// A refusal as both APIs write it: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Deserialize)]
pub struct ApiRefusal {
    pub code: String,
    pub message: String,
}

/// What a decision came to, as the gateway answered.
#[derive(Debug)]
pub enum Answer<T> {
    Ok(T),
    Refused { status: u16, refusal: ApiRefusal },
}

impl Upstream {
    pub fn new(config: &callproof_config::ConsoleConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_millis(config.http_timeout_ms))
            .build()
            .context("building the console's HTTP client")?;
        Ok(Upstream {
            http,
            ingress_url: config.ingress_url.trim_end_matches('/').to_string(),
            evidence_url: config
                .evidence_url
                .as_ref()
                .map(|url| url.trim_end_matches('/').to_string()),
        })
    }

    pub fn evidence(&self) -> Result<&str, ConsoleError> {
        self.evidence_url
            .as_deref()
            .ok_or(ConsoleError::NoEvidenceApi)
    }

    /// `GET {base}{path}` as JSON; a refusal is a [`ConsoleError::Upstream`].
    pub async fn get<T: DeserializeOwned>(
        &self,
        service: &'static str,
        url: &str,
        token: &str,
    ) -> Result<T, ConsoleError> {
        match self.get_answer(service, url, token).await? {
            Answer::Ok(value) => Ok(value),
            Answer::Refused { status, refusal } => Err(ConsoleError::Upstream {
                service,
                status,
                message: refusal.message,
            }),
        }
    }

    /// As [`Upstream::get`], with a refusal as a value the caller words itself.
    pub async fn get_answer<T: DeserializeOwned>(
        &self,
        service: &'static str,
        url: &str,
        token: &str,
    ) -> Result<Answer<T>, ConsoleError> {
        let response = self
            .http
            .get(url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|error| unreachable_error(service, error))?;
        answer(service, response).await
    }

    /// `POST` a JSON body; the answer or the refusal.
    pub async fn post<T: DeserializeOwned>(
        &self,
        service: &'static str,
        url: &str,
        token: &str,
        body: &Value,
    ) -> Result<Answer<T>, ConsoleError> {
        let response = self
            .http
            .post(url)
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .map_err(|error| unreachable_error(service, error))?;
        answer(service, response).await
    }

    /// `GET` a file to relay as it is (proofs, the report page, bundles).
    pub async fn get_raw(
        &self,
        service: &'static str,
        url: &str,
        token: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ConsoleError> {
        let mut request = self.http.get(url).bearer_auth(token);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let response = request
            .send()
            .await
            .map_err(|error| unreachable_error(service, error))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let refusal = refusal_of(response).await;
        Err(ConsoleError::Upstream {
            service,
            status,
            message: refusal.message,
        })
    }
}

fn unreachable_error(service: &'static str, error: reqwest::Error) -> ConsoleError {
    tracing::warn!(service, error = %error, "upstream request failed");
    ConsoleError::Upstream {
        service,
        status: 502,
        message: format!("{service} cannot be reached; try again shortly"),
    }
}

async fn answer<T: DeserializeOwned>(
    service: &'static str,
    response: reqwest::Response,
) -> Result<Answer<T>, ConsoleError> {
    let status = response.status();
    if status.is_success() {
        let value = response.json::<T>().await.map_err(|error| {
            tracing::warn!(service, error = %error, "unexpected answer");
            ConsoleError::Upstream {
                service,
                status: 502,
                message: format!("{service} gave an answer the console cannot read"),
            }
        })?;
        return Ok(Answer::Ok(value));
    }
    Ok(Answer::Refused {
        status: status.as_u16(),
        refusal: refusal_of(response).await,
    })
}

async fn refusal_of(response: reqwest::Response) -> ApiRefusal {
    #[derive(Deserialize)]
    struct Body {
        error: ApiRefusal,
    }
    let status = response.status();
    match response.json::<Body>().await {
        Ok(body) => body.error,
        Err(_) => ApiRefusal {
            code: "unknown".into(),
            message: format!("answered {status}"),
        },
    }
}

/// `url` with `pairs` as its query, percent-encoded.
pub fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return url.to_string();
    }
    let query: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", encode(value)))
        .collect();
    format!("{url}?{}", query.join("&"))
}

/// Percent-encodes a query value or a path segment.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}
