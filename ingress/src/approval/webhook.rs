//! Tells reviewers that a call waits for them: a Slack-compatible incoming-webhook message
//! (`{"text", "blocks"}`) with a link to the approval. Best effort: the request for approval is
//! already on Kafka and listed at `GET /v1/approvals`, so a webhook that fails is logged, not
//! retried, and never holds the call. The message names the function, the caller and the reason,
//! not the arguments: a chat channel is not the place for them.

use callproof_schemas::Principal;
use serde_json::json;

use super::policy::{ApprovalPolicy, WebhookUrl};
use crate::AppState;
use crate::events::CallRecorder;

const WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn notify(
    app: &AppState,
    webhook: &WebhookUrl,
    call: &CallRecorder,
    policy: &ApprovalPolicy,
    caller: &Principal,
    reason: &str,
    expires_at: i64,
) {
    let (function, call_id) = (call.function.as_str(), call.call_id.as_str());
    let link = format!("{}/v1/approvals/{call_id}", app.public_url);
    let via = caller
        .actor
        .as_ref()
        .map(|actor| format!(" (agent {})", actor.subject))
        .unwrap_or_default();
    let expires = super::api::rfc3339(expires_at);
    let text = format!(
        "Approval needed: `{function}` called by {}{via}. {reason}. {} approval(s) from {} needed before {expires}. Review: {link}",
        caller.subject,
        policy.quorum,
        policy.approver_groups.join(", "),
    );
    let message = json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "actions", "elements": [{
                "type": "button",
                "text": {"type": "plain_text", "text": "Review the call"},
                "url": link,
            }]},
        ],
    });
    let request = app
        .http
        .post(webhook.0.clone())
        .timeout(WEBHOOK_TIMEOUT)
        .json(&message);
    let call_id = call_id.to_string();
    tokio::spawn(async move {
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                tracing::debug!(call_id = %call_id, "approval webhook delivered");
            }
            // Neither the URL nor the answer is logged: the URL is a credential.
            Ok(response) => {
                tracing::warn!(call_id = %call_id, status = response.status().as_u16(), "approval webhook refused");
            }
            Err(error) => {
                tracing::warn!(call_id = %call_id, timeout = error.is_timeout(), connect = error.is_connect(), "approval webhook failed");
            }
        }
    });
}
