//! [`Approvals`]: this instance's view of the held calls and what it does about them.
//!
//! - A consumer of its own (no consumer group: partitions assigned by hand, nothing committed)
//!   reads the calls topic from `lookback` ago and applies every event to the [`Ledger`].
//! - Until it has read up to the end of the topic as it was at start ("caught up"), the
//!   instance takes no decision and claims nothing, so a restarted instance never acts on
//!   stale state.
//! - The actor loop then moves held calls on, publishing the event first each time:
//!   `approval_expired` for an overdue call, `call_forwarded` (the claim) for an approved one,
//!   and executes the calls whose winning claim is its own.
//!
//! Who acts: the instance that received the call (its `owner`) at once; any other instance
//! only after `takeover` more, in case the owner is gone. Two instances may then both publish a
//! claim; the ledger takes the first in the partition, and only the instance that published it
//! (known by the claim's event id) calls the function. So a call is executed at most once, and
//! exactly once while one instance lives.
//!
//! A claimed call whose claimant dies for good would stay `executing` forever. Once the
//! function's timeout plus `takeover` has passed since the claim, any instance closes it with
//! `call_failed` (`interrupted`). It never re-executes it: the claimant may have called the
//! function already, and running it twice is worse than an honest "may or may not have run".

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callproof_config::KafkaConfig;
use callproof_schemas::{Approval, CallEvent, Decision, EventKind, Failure};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tokio::sync::watch;

use super::ledger::{CallStatus, HeldCall, INTERRUPTED, Ledger, arguments_sha256};
use crate::AppState;
use crate::events::{CallRecorder, now_micros};

/// An action this instance published and has not seen applied is not repeated before this.
const RETRY_ACTION_AFTER: Duration = Duration::from_secs(5);
/// How often the actor looks at the held calls when no event arrives.
const TICK: Duration = Duration::from_millis(250);

pub struct Approvals {
    instance_id: String,
    ledger: Mutex<Ledger>,
    /// Bumped after every applied message, so waiters re-check.
    changes: watch::Sender<u64>,
    caught_up: AtomicBool,
    /// Per partition: the next offset to apply, and the end of the topic at start.
    positions: Mutex<HashMap<i32, i64>>,
    targets: Mutex<Option<HashMap<i32, i64>>>,
    takeover: Duration,
    retention: Duration,
    /// Claims (`call_forwarded` event ids) this process published: the proof that a winning
    /// claim of this instance id is ours and not a previous run's.
    my_claims: Mutex<HashSet<String>>,
    running: Mutex<HashSet<String>>,
    attempts: Mutex<HashMap<String, Instant>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere must not stop the gateway from answering: the data stays consistent
    // because every critical section here is a plain map update.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).unwrap_or(i64::MAX)
}

enum Action {
    Expire(HeldCall),
    Claim(HeldCall),
    Execute(HeldCall),
    /// Close a claimed call that will never get its outcome, with why.
    Interrupted(HeldCall, &'static str),
}

/// Why a claimed call was closed without an outcome: this instance restarted after claiming it.
const INTERRUPTED_BY_RESTART: &str = "the gateway stopped while calling the function; it is not \
                                      called again, so it may or may not have run";
/// Why a claimed call was closed without an outcome: its claimant is gone.
const INTERRUPTED_CLAIMANT_GONE: &str = "the gateway that claimed this call stopped before \
                                         recording its outcome; the function is not called again, \
                                         so it may or may not have run";

impl Approvals {
    pub fn new(instance_id: &str, takeover: Duration, retention: Duration) -> Arc<Approvals> {
        Arc::new(Approvals {
            instance_id: instance_id.to_string(),
            ledger: Mutex::new(Ledger::default()),
            changes: watch::Sender::new(0),
            caught_up: AtomicBool::new(false),
            positions: Mutex::new(HashMap::new()),
            targets: Mutex::new(None),
            takeover,
            retention,
            my_claims: Mutex::new(HashSet::new()),
            running: Mutex::new(HashSet::new()),
            attempts: Mutex::new(HashMap::new()),
        })
    }

    /// For a gateway without any function that needs approval: nothing to read, so nothing to
    /// wait for (the endpoints then simply find no held call).
    pub fn without_approvals(&self) {
        self.caught_up.store(true, Ordering::Relaxed);
    }

    pub fn is_caught_up(&self) -> bool {
        self.caught_up.load(Ordering::Relaxed)
    }

    /// A copy of one held call's state.
    pub fn snapshot(&self, call_id: &str) -> Option<HeldCall> {
        lock(&self.ledger).get(call_id).cloned()
    }

    /// Copies of the held calls `keep` selects.
    pub fn select(&self, keep: impl Fn(&HeldCall) -> bool) -> Vec<HeldCall> {
        let mut calls: Vec<HeldCall> = lock(&self.ledger)
            .calls()
            .filter(|call| keep(call))
            .cloned()
            .collect();
        calls.sort_by_key(|call| call.requested_at);
        calls
    }

    pub fn reserve_seq(&self, call_id: &str) -> Option<i32> {
        lock(&self.ledger).reserve_seq(call_id)
    }

    /// Waits until this instance has applied the messages at `positions` (partition, offset),
    /// or `timeout` passed; true if it has.
    pub async fn wait_applied(&self, positions: &[(i32, i64)], timeout: Duration) -> bool {
        let applied = || {
            let read = lock(&self.positions);
            positions
                .iter()
                .all(|(partition, offset)| read.get(partition).is_some_and(|next| next > offset))
        };
        self.wait_until(applied, timeout).await
    }

    /// Waits until the call is final (or `timeout` passed) and returns its state.
    pub async fn wait_final(&self, call_id: &str, timeout: Duration) -> Option<HeldCall> {
        let is_final = || {
            lock(&self.ledger)
                .get(call_id)
                .is_some_and(|call| call.status.is_final())
        };
        self.wait_until(is_final, timeout).await;
        self.snapshot(call_id)
    }

    async fn wait_until(&self, done: impl Fn() -> bool, timeout: Duration) -> bool {
        let mut changes = self.changes.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if done() {
                return true;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                // Timed out, or the sender is gone (cannot happen while `self` lives).
                _ => return done(),
            }
        }
    }

    /// Starts the consumer and the actor. `app` is weak so that the tasks end with the app.
    pub fn start(
        self: &Arc<Self>,
        kafka: &KafkaConfig,
        lookback: Duration,
        app: Weak<AppState>,
    ) -> anyhow::Result<()> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", &kafka.brokers)
            .set(
                "client.id",
                format!("callproof-ingress-{}-approvals", self.instance_id),
            )
            // Required by librdkafka, never used: partitions are assigned, offsets not committed.
            .set(
                "group.id",
                format!("callproof-ingress-approvals-{}", uuid::Uuid::now_v7()),
            )
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "100");
        for (key, value) in &kafka.properties {
            client.set(key, value);
        }
        let consumer: Arc<StreamConsumer> = Arc::new(client.create()?);
        let topic = kafka.calls_topic.clone();
        tokio::spawn(consume(self.clone(), consumer, topic, lookback));
        tokio::spawn(act_loop(self.clone(), app));
        Ok(())
    }

    fn apply(&self, partition: i32, offset: i64, payload: Option<&[u8]>) {
        if let Some(payload) = payload {
            match callproof_schemas::decode(payload) {
                Ok(event) => {
                    let changed = lock(&self.ledger).apply(&event);
                    if changed {
                        tracing::debug!(call_id = %event.call_id, kind = %event.kind, "held call changed");
                    }
                }
                Err(error) => {
                    tracing::warn!(partition, offset, %error, "undecodable event on the calls topic: skipped");
                }
            }
        }
        lock(&self.positions).insert(partition, offset + 1);
        self.check_caught_up();
        self.changes
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    fn check_caught_up(&self) {
        if self.is_caught_up() {
            return;
        }
        let targets = lock(&self.targets);
        let Some(targets) = targets.as_ref() else {
            return;
        };
        let positions = lock(&self.positions);
        let done = targets
            .iter()
            .all(|(partition, end)| positions.get(partition).is_some_and(|next| next >= end));
        if done {
            self.caught_up.store(true, Ordering::Relaxed);
            tracing::info!(
                held = lock(&self.ledger).calls().count(),
                "approvals state rebuilt from the calls topic"
            );
            self.changes
                .send_modify(|count| *count = count.wrapping_add(1));
        }
    }

    async fn act(&self, app: &Arc<AppState>) {
        let now = now_micros();
        let takeover = micros(self.takeover);
        let me = self.instance_id.as_str();
        let actions: Vec<Action> = {
            let ledger = lock(&self.ledger);
            let my_claims = lock(&self.my_claims);
            let running = lock(&self.running);
            ledger
                .calls()
                .filter_map(|call| {
                    let mine = call.owner == me;
                    match call.status {
                        CallStatus::PendingApproval
                            if now > call.expires_at
                                && (mine || now > call.expires_at.saturating_add(takeover)) =>
                        {
                            Some(Action::Expire(call.clone()))
                        }
                        CallStatus::Approved
                            if mine || now > call.status_since.saturating_add(takeover) =>
                        {
                            Some(Action::Claim(call.clone()))
                        }
                        CallStatus::Executing => {
                            let claim = call.claim.as_ref()?;
                            if claim.gateway != me {
                                // Another instance runs it. A live claimant records the outcome
                                // within the function's timeout; past that and the takeover
                                // period it is presumed gone for good.
                                let timeout = app.call_timeout(&call.function);
                                let abandoned_after = call
                                    .status_since
                                    .saturating_add(micros(timeout))
                                    .saturating_add(takeover);
                                (now > abandoned_after).then(|| {
                                    Action::Interrupted(call.clone(), INTERRUPTED_CLAIMANT_GONE)
                                })
                            } else if running.contains(&call.call_id) {
                                None
                            } else if my_claims.contains(&claim.event_id) {
                                Some(Action::Execute(call.clone()))
                            } else {
                                // Our instance id won with a claim this process did not make:
                                // a previous run claimed the call and stopped. It may have
                                // called the function, so the call is not made again.
                                Some(Action::Interrupted(call.clone(), INTERRUPTED_BY_RESTART))
                            }
                        }
                        _ => None,
                    }
                })
                .collect()
        };
        for action in actions {
            match action {
                Action::Execute(call) => {
                    lock(&self.running).insert(call.call_id.clone());
                    tokio::spawn(execute(app.clone(), call));
                }
                Action::Expire(call) => {
                    if self.attempt(&call.call_id) {
                        self.publish_expired(app, &call).await;
                    }
                }
                Action::Claim(call) => {
                    if self.attempt(&call.call_id) {
                        self.publish_claim(app, &call).await;
                    }
                }
                Action::Interrupted(call, message) => {
                    if self.attempt(&call.call_id) {
                        let failure = Failure {
                            code: INTERRUPTED.to_string(),
                            message: message.to_string(),
                        };
                        let claimant = call.claim.as_ref().map(|claim| claim.gateway.as_str());
                        tracing::warn!(call_id = %call.call_id, claimant, message, "claimed call closed as interrupted");
                        let mut failed = self.event_for(&call, EventKind::CallFailed);
                        failed.failure = Some(failure);
                        self.publish(app, failed).await;
                    }
                }
            }
        }
        let retention = micros(self.retention);
        let evicted = lock(&self.ledger).evict(now.saturating_sub(retention));
        if evicted > 0 {
            tracing::debug!(evicted, "forgot decided calls past their retention");
        }
    }

    /// True if an action on `call_id` may be published now (not one in flight recently).
    fn attempt(&self, call_id: &str) -> bool {
        let mut attempts = lock(&self.attempts);
        let now = Instant::now();
        attempts.retain(|_, at| now.duration_since(*at) < RETRY_ACTION_AFTER * 4);
        match attempts.get(call_id) {
            Some(at) if now.duration_since(*at) < RETRY_ACTION_AFTER => false,
            _ => {
                attempts.insert(call_id.to_string(), now);
                true
            }
        }
    }

    fn event_for(&self, call: &HeldCall, kind: EventKind) -> CallEvent {
        let seq = self.reserve_seq(&call.call_id).unwrap_or(call.next_seq);
        recorder_for(call, &self.instance_id, seq).event(kind)
    }

    async fn publish_expired(&self, app: &AppState, call: &HeldCall) {
        let mut expired = self.event_for(call, EventKind::ApprovalExpired);
        expired.approval = Some(Approval {
            approvers: call.approver_groups.clone(),
            quorum: i32::try_from(call.quorum).unwrap_or(i32::MAX),
            reviewer: None,
            decision: None,
            comment: None,
            expires_at: Some(call.expires_at),
            arguments_sha256: Some(call.arguments_sha256.clone()),
        });
        tracing::info!(call_id = %call.call_id, approvals = call.approvals.len(), quorum = call.quorum, "approval expired");
        self.publish(app, expired).await;
    }

    async fn publish_claim(&self, app: &AppState, call: &HeldCall) {
        let mut claim = self.event_for(call, EventKind::CallForwarded);
        let reviewers: Vec<&str> = call
            .approvals
            .iter()
            .map(|vote| vote.reviewer.as_str())
            .collect();
        claim.decision = Some(Decision {
            allowed: true,
            policy_id: Some(call.approval_policy_id()),
            reason: format!(
                "approved by {} (quorum {})",
                reviewers.join(", "),
                call.quorum
            ),
        });
        // Remembered before publishing: once the broker has it, it may win at once.
        lock(&self.my_claims).insert(claim.event_id.clone());
        tracing::info!(call_id = %call.call_id, owner = %call.owner, "claiming the approved call");
        self.publish(app, claim).await;
    }

    async fn publish(&self, app: &AppState, event: CallEvent) {
        if let Err(error) = app.events.publish(&[event]).await {
            // Nothing happens until the event is recorded; the action is retried.
            tracing::warn!(%error, "approval event not recorded; will retry");
        }
    }
}

/// Continues the events of a held call (with its MCP facts, if it is a tool call).
pub(super) fn recorder_for(call: &HeldCall, instance_id: &str, seq: i32) -> CallRecorder {
    let recorder = CallRecorder::resume(
        &call.call_id,
        instance_id,
        &call.function,
        call.caller.clone(),
        seq,
    );
    match &call.mcp {
        Some(mcp) => recorder.with_mcp(mcp.clone()),
        None => recorder,
    }
}

/// Calls the function of an approved call whose winning claim is ours, and records the outcome.
async fn execute(app: Arc<AppState>, call: HeldCall) {
    let call_id = call.call_id.clone();
    let seq = app
        .approvals
        .reserve_seq(&call.call_id)
        .unwrap_or(call.next_seq);
    let mut recorder = recorder_for(&call, &app.instance_id, seq);
    // The ledger already enforces it; checked again right before the bytes leave.
    let held_sha256 = arguments_sha256(call.arguments.as_bytes());
    let bound = held_sha256 == call.arguments_sha256
        && call
            .approvals
            .iter()
            .all(|vote| vote.arguments_sha256 == held_sha256);
    let outcome = match app.functions.get(&call.function) {
        _ if bound && crate::mcp::is_mcp_call(&call.function) => {
            tracing::info!(call_id = %call_id, "executing the approved MCP tool call");
            crate::mcp::forward_approved(&app, recorder, &call).await
        }
        Some(function) if bound => {
            tracing::info!(call_id = %call_id, "executing the approved call");
            let (outcome, _answer) = crate::invoke::forward(
                &app,
                function,
                &mut recorder,
                &call.caller,
                call.arguments.clone().into_bytes(),
            )
            .await;
            outcome
        }
        found => {
            let message = if found.is_none() {
                "the function is no longer configured"
            } else {
                "the held arguments are not the approved ones"
            };
            tracing::error!(call_id = %call_id, message, "approved call not executed");
            let mut failed = recorder.event(EventKind::CallFailed);
            failed.failure = Some(Failure {
                code: "not_executed".to_string(),
                message: message.to_string(),
            });
            failed
        }
    };
    // The function has run: its outcome must reach the log, so keep trying for a while.
    for attempt in 1..=60 {
        match app.events.publish(std::slice::from_ref(&outcome)).await {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(call_id = %call_id, attempt, %error, "outcome of an approved call not recorded yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    tracing::error!(call_id = %call_id, "outcome of an approved call could not be recorded");
}

async fn act_loop(approvals: Arc<Approvals>, app: Weak<AppState>) {
    let mut changes = approvals.changes.subscribe();
    loop {
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
        let Some(app) = app.upgrade() else {
            return;
        };
        if approvals.is_caught_up() {
            approvals.act(&app).await;
        }
    }
}

async fn consume(
    approvals: Arc<Approvals>,
    consumer: Arc<StreamConsumer>,
    topic: String,
    lookback: Duration,
) {
    loop {
        let assigning = consumer.clone();
        let name = topic.clone();
        let assigned =
            tokio::task::spawn_blocking(move || assign(&assigning, &name, lookback)).await;
        match assigned {
            Ok(Ok((starts, ends))) => {
                tracing::info!(topic = %topic, partitions = ends.len(), "reading held calls from the calls topic");
                *lock(&approvals.positions) = starts;
                *lock(&approvals.targets) = Some(ends);
                approvals.check_caught_up();
                break;
            }
            Ok(Err(error)) => {
                tracing::warn!(topic = %topic, %error, "cannot read the calls topic yet; retrying");
            }
            Err(error) => tracing::warn!(%error, "assignment task failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    loop {
        match consumer.recv().await {
            Ok(message) => {
                approvals.apply(message.partition(), message.offset(), message.payload())
            }
            Err(error) => {
                tracing::warn!(%error, "calls topic consumer error");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Assigns every partition of `topic`, each from the first offset at most `lookback` old (or its
/// beginning when the broker cannot look offsets up by time). Returns the start offsets and the
/// ends at the time of assignment.
#[allow(clippy::type_complexity)]
fn assign(
    consumer: &StreamConsumer,
    topic: &str,
    lookback: Duration,
) -> KafkaResult<(HashMap<i32, i64>, HashMap<i32, i64>)> {
    let timeout = Duration::from_secs(5);
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|found| found.name() == topic && found.error().is_none())
        .flat_map(|found| found.partitions().iter().map(|partition| partition.id()))
        .collect();
    if partitions.is_empty() {
        return Err(rdkafka::error::KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        ));
    }
    let since_ms = SystemTime::now()
        .checked_sub(lookback)
        .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| i64::try_from(since.as_millis()).unwrap_or(0));
    let mut query = TopicPartitionList::new();
    for partition in &partitions {
        query.add_partition_offset(topic, *partition, Offset::Offset(since_ms))?;
    }
    let by_time = consumer.offsets_for_times(query, timeout).ok();
    let mut assignment = TopicPartitionList::new();
    let mut starts = HashMap::new();
    let mut ends = HashMap::new();
    for partition in partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, timeout)?;
        let start = match by_time
            .as_ref()
            .and_then(|found| found.find_partition(topic, partition))
            .map(|element| element.offset())
        {
            Some(Offset::Offset(offset)) if offset >= low => offset,
            Some(Offset::End) => high,
            _ => low,
        };
        assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
        starts.insert(partition, start);
        ends.insert(partition, high);
    }
    consumer.assign(&assignment)?;
    Ok((starts, ends))
}
