//! The state of calls held for approval, as a fold over their events in partition order.
//!
//! Every instance consumes the calls topic and applies the same events in the same order (one
//! call's events share its key, so its partition orders them), so every instance reaches the same
//! state: this fold is the only place a held call changes state. Handlers and the executor never
//! change it directly; they publish an event and wait for it to come back. An event that arrives
//! when it no longer applies (a vote after a deny, a second claim) is recorded as not counted.

use std::collections::HashMap;

use callproof_schemas::{ApprovalDecision, CallEvent, EventKind, Failure, Principal, Response};
use sha2::{Digest, Sha256};

/// The failure code of a claimed call closed without its outcome (its claimant stopped). The
/// only outcome the fold accepts from an instance other than the claimant's.
pub const INTERRUPTED: &str = "interrupted";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStatus {
    PendingApproval,
    Approved,
    Denied,
    Expired,
    /// Claimed by one instance (`call_forwarded`), which is calling the function.
    Executing,
    Completed,
    Failed,
}

impl CallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CallStatus::PendingApproval => "pending_approval",
            CallStatus::Approved => "approved",
            CallStatus::Denied => "denied",
            CallStatus::Expired => "expired",
            CallStatus::Executing => "executing",
            CallStatus::Completed => "completed",
            CallStatus::Failed => "failed",
        }
    }

    pub fn parse(name: &str) -> Option<CallStatus> {
        [
            CallStatus::PendingApproval,
            CallStatus::Approved,
            CallStatus::Denied,
            CallStatus::Expired,
            CallStatus::Executing,
            CallStatus::Completed,
            CallStatus::Failed,
        ]
        .into_iter()
        .find(|status| {
            status.as_str() == name || (name == "pending" && status.as_str() == "pending_approval")
        })
    }

    /// No event changes this state any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            CallStatus::Denied | CallStatus::Expired | CallStatus::Completed | CallStatus::Failed
        )
    }
}

#[derive(Debug, Clone)]
pub struct Vote {
    pub reviewer: String,
    pub decision: ApprovalDecision,
    pub comment: Option<String>,
    pub time: i64,
    pub event_id: String,
    pub arguments_sha256: String,
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub gateway: String,
    pub event_id: String,
}

#[derive(Debug, Clone)]
pub struct HeldCall {
    pub call_id: String,
    pub function: String,
    /// The instance that received the call: it executes the call unless it is gone.
    pub owner: String,
    pub caller: Principal,
    /// The arguments as held: masked JSON, exactly the bytes forwarded on approval.
    pub arguments: String,
    pub arguments_sha256: String,
    pub approver_groups: Vec<String>,
    pub quorum: u32,
    /// Why the call needs approval, as `approval_requested` recorded it (names the condition,
    /// never a value it read).
    pub reason: Option<String>,
    pub requested_at: i64,
    pub expires_at: i64,
    pub approvals: Vec<Vote>,
    pub denial: Option<Vote>,
    pub status: CallStatus,
    /// Event time of the last status change.
    pub status_since: i64,
    /// The next `seq` for an event of this call.
    pub next_seq: i32,
    pub claim: Option<Claim>,
    pub response: Option<Response>,
    pub failure: Option<Failure>,
    /// Decisions that arrived but did not count, by event id, with why.
    pub not_counted: HashMap<String, String>,
    /// The approval policy that held it (`functions.<name>.approval`,
    /// `mcp.servers.<server>.tools.<tool>.approval`), as `approval_requested` recorded it.
    pub approval_policy: Option<String>,
    /// The MCP facts of a held `tools/call`, carried on every later event of the call.
    pub mcp: Option<callproof_schemas::Mcp>,
}

/// SHA-256 (hex) of the arguments as held.
pub fn arguments_sha256(arguments: &[u8]) -> String {
    Sha256::digest(arguments)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Whether two principals share a party: the same subject, or the agent of one is the other (or
/// the same agent acts in both). Used so that the caller can never approve its own call.
pub fn share_a_party(
    caller: &Principal,
    reviewer_subject: &str,
    reviewer_actor: Option<&str>,
) -> bool {
    let caller_parties = [
        Some(caller.subject.as_str()),
        caller.actor.as_ref().map(|actor| actor.subject.as_str()),
    ];
    [Some(reviewer_subject), reviewer_actor]
        .into_iter()
        .flatten()
        .any(|party| caller_parties.contains(&Some(party)))
}

#[derive(Default)]
pub struct Ledger {
    calls: HashMap<String, HeldCall>,
}

impl Ledger {
    pub fn get(&self, call_id: &str) -> Option<&HeldCall> {
        self.calls.get(call_id)
    }

    pub fn calls(&self) -> impl Iterator<Item = &HeldCall> {
        self.calls.values()
    }

    /// Takes the next `seq` of a call for an event about to be published, so that this
    /// instance never gives two events the same number. Another instance numbering an event of
    /// the same call at the same moment can pick the same one: nothing but a single writer per
    /// call could prevent it (see "Limits" in `docs/approvals.md`).
    pub fn reserve_seq(&mut self, call_id: &str) -> Option<i32> {
        let call = self.calls.get_mut(call_id)?;
        let seq = call.next_seq;
        call.next_seq += 1;
        Some(seq)
    }

    /// Forgets final calls whose state last changed before `before` (micros).
    pub fn evict(&mut self, before: i64) -> usize {
        let size = self.calls.len();
        self.calls
            .retain(|_, call| !(call.status.is_final() && call.status_since < before));
        size - self.calls.len()
    }

    /// Applies one event from the calls topic; true if a held call changed.
    pub fn apply(&mut self, event: &CallEvent) -> bool {
        if event.kind == EventKind::ApprovalRequested {
            return self.request(event);
        }
        let Some(call) = self.calls.get_mut(&event.call_id) else {
            // Not a held call (or one requested before the window this instance read).
            return false;
        };
        call.next_seq = call.next_seq.max(event.seq.saturating_add(1));
        match event.kind {
            EventKind::ApprovalDecided => call.decide(event),
            EventKind::ApprovalExpired if call.status == CallStatus::PendingApproval => {
                call.set_status(CallStatus::Expired, event.time);
                true
            }
            EventKind::CallForwarded if call.status == CallStatus::Approved => {
                // The first claim after approval wins; every instance sees the same first.
                call.claim = Some(Claim {
                    gateway: event.gateway.clone(),
                    event_id: event.event_id.clone(),
                });
                call.set_status(CallStatus::Executing, event.time);
                true
            }
            EventKind::CallCompleted | EventKind::CallFailed
                if call.status == CallStatus::Executing
                    && (call
                        .claim
                        .as_ref()
                        .is_some_and(|claim| claim.gateway == event.gateway)
                        || is_interrupted(event)) =>
            {
                call.response = event.response.clone();
                call.failure = event.failure.clone();
                let status = if event.kind == EventKind::CallCompleted {
                    CallStatus::Completed
                } else {
                    CallStatus::Failed
                };
                call.set_status(status, event.time);
                true
            }
            _ => false,
        }
    }

    fn request(&mut self, event: &CallEvent) -> bool {
        let (Some(approval), Some(caller), Some(request)) =
            (&event.approval, &event.principal, &event.request)
        else {
            tracing::warn!(call_id = %event.call_id, "approval_requested without approval, principal or request: ignored");
            return false;
        };
        if self.calls.contains_key(&event.call_id) {
            return false;
        }
        let arguments = request.body.clone().unwrap_or_default();
        let held_sha256 = arguments_sha256(arguments.as_bytes());
        if approval.arguments_sha256.as_deref() != Some(held_sha256.as_str()) {
            tracing::warn!(call_id = %event.call_id, "approval_requested whose hash does not match its arguments: ignored");
            return false;
        }
        self.calls.insert(
            event.call_id.clone(),
            HeldCall {
                call_id: event.call_id.clone(),
                function: event.function.clone(),
                owner: event.gateway.clone(),
                caller: caller.clone(),
                arguments,
                arguments_sha256: held_sha256,
                approver_groups: approval.approvers.clone(),
                quorum: u32::try_from(approval.quorum).unwrap_or(1).max(1),
                reason: event
                    .decision
                    .as_ref()
                    .map(|decision| decision.reason.clone()),
                requested_at: event.time,
                expires_at: approval.expires_at.unwrap_or(event.time),
                approvals: Vec::new(),
                denial: None,
                status: CallStatus::PendingApproval,
                status_since: event.time,
                next_seq: event.seq.saturating_add(1),
                claim: None,
                response: None,
                failure: None,
                not_counted: HashMap::new(),
                approval_policy: event
                    .decision
                    .as_ref()
                    .and_then(|decision| decision.policy_id.clone()),
                mcp: event.mcp.clone(),
            },
        );
        true
    }
}

/// A `call_failed` closing a claimed call whose claimant is gone: any instance may publish it
/// (after the takeover rule of `service.rs`), and the first outcome in the partition wins, so a
/// late outcome of a claimant presumed dead changes nothing.
fn is_interrupted(event: &CallEvent) -> bool {
    event.kind == EventKind::CallFailed
        && event
            .failure
            .as_ref()
            .is_some_and(|failure| failure.code == INTERRUPTED)
}

impl HeldCall {
    /// The id of the approval policy that held the call.
    pub fn approval_policy_id(&self) -> String {
        self.approval_policy
            .clone()
            .unwrap_or_else(|| format!("functions.{}.approval", self.function))
    }

    fn set_status(&mut self, status: CallStatus, time: i64) {
        self.status = status;
        self.status_since = time;
    }

    /// Checks a decision against the rules again, here where every instance applies it the same
    /// way: a vote published by a buggy or racing instance cannot break them.
    fn decide(&mut self, event: &CallEvent) -> bool {
        let Some(approval) = &event.approval else {
            return false;
        };
        let (Some(reviewer), Some(decision)) = (&approval.reviewer, approval.decision) else {
            return false;
        };
        let refusal = if self.status != CallStatus::PendingApproval {
            Some(format!(
                "the call is no longer pending ({})",
                self.status.as_str()
            ))
        } else if event.time > self.expires_at {
            Some("the decision came after the approval expired".to_string())
        } else if approval.arguments_sha256.as_deref() != Some(self.arguments_sha256.as_str()) {
            Some("the decision is for other arguments".to_string())
        } else if share_a_party(&self.caller, reviewer, None) {
            Some("the caller cannot decide on its own call".to_string())
        } else if self.approvals.iter().any(|vote| &vote.reviewer == reviewer) {
            Some(format!("{reviewer} has already decided"))
        } else {
            None
        };
        if let Some(reason) = refusal {
            self.not_counted.insert(event.event_id.clone(), reason);
            return true;
        }
        let vote = Vote {
            reviewer: reviewer.clone(),
            decision,
            comment: approval.comment.clone(),
            time: event.time,
            event_id: event.event_id.clone(),
            arguments_sha256: self.arguments_sha256.clone(),
        };
        match decision {
            ApprovalDecision::Deny => {
                self.denial = Some(vote);
                self.set_status(CallStatus::Denied, event.time);
            }
            ApprovalDecision::Approve => {
                self.approvals.push(vote);
                if self.approvals.len() >= self.quorum as usize {
                    self.set_status(CallStatus::Approved, event.time);
                }
            }
        }
        true
    }

    /// Whether the decision published as `event_id` counted, and if not why.
    pub fn counted(&self, event_id: &str) -> Option<Result<(), String>> {
        if let Some(reason) = self.not_counted.get(event_id) {
            return Some(Err(reason.clone()));
        }
        let counted = self.approvals.iter().any(|vote| vote.event_id == event_id)
            || self
                .denial
                .as_ref()
                .is_some_and(|vote| vote.event_id == event_id);
        counted.then_some(Ok(()))
    }
}

#[cfg(test)]
mod tests;
