//! Calls a function's upstream with the gateway-held credential. Nothing of the caller's request
//! is forwarded but the masked JSON body and who the caller is: in particular never the caller's
//! `Authorization` header.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use callproof_schemas::Principal;
use http::{HeaderValue, header};

use crate::function::Function;

pub const CALLER_SUBJECT_HEADER: &str = "x-callproof-subject";
pub const CALLER_ACTOR_HEADER: &str = "x-callproof-actor";

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("function did not answer within {0:?}")]
    Timeout(Duration),
    #[error("function is unreachable")]
    Unreachable,
    #[error("function answered with more than {0} bytes")]
    ResponseTooLarge(usize),
    #[error("function's answer broke off")]
    Broken,
}

pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub latency: Duration,
}

pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        // A redirect could carry the injected credential to another host.
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
}

pub async fn call(
    client: &reqwest::Client,
    function: &Function,
    call_id: &str,
    principal: &Principal,
    body: Vec<u8>,
    max_response_bytes: usize,
) -> Result<UpstreamResponse, UpstreamError> {
    let started = Instant::now();
    let mut request = client
        .post(function.upstream.clone())
        .timeout(function.timeout)
        .header(header::CONTENT_TYPE, "application/json")
        .header(crate::CALL_ID_HEADER, call_id)
        .body(body);
    if let Ok(subject) = HeaderValue::from_str(&principal.subject) {
        request = request.header(CALLER_SUBJECT_HEADER, subject);
    }
    if let Some(actor) = principal
        .actor
        .as_ref()
        .and_then(|actor| HeaderValue::from_str(&actor.subject).ok())
    {
        request = request.header(CALLER_ACTOR_HEADER, actor);
    }
    if let Some((name, value)) = &function.credential {
        request = request.header(name.clone(), value.clone());
    }
    let classify = |error: reqwest::Error| {
        if error.is_timeout() {
            UpstreamError::Timeout(function.timeout)
        } else if error.is_connect() || error.is_request() {
            UpstreamError::Unreachable
        } else {
            UpstreamError::Broken
        }
    };
    let mut response = request.send().await.map_err(classify)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    if response
        .content_length()
        .is_some_and(|length| length > max_response_bytes as u64)
    {
        return Err(UpstreamError::ResponseTooLarge(max_response_bytes));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        if body.len() + chunk.len() > max_response_bytes {
            return Err(UpstreamError::ResponseTooLarge(max_response_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(UpstreamResponse {
        status,
        content_type,
        body: body.freeze(),
        latency: started.elapsed(),
    })
}
