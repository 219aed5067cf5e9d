//! Events of one call never share a `seq` in the log, whatever gateway instance numbered them.

use std::time::Duration;

use callproof_schemas::{CallEvent, EventKind};
use rand::SeedableRng;
use serde_json::Value;

use crate::support::events::call_event;
use crate::support::{Deployment, produce, producer};

const T0: i64 = 1_764_000_000_000_000;

/// An event of `call_id` as a gateway numbered it.
fn event(call_id: &str, seq: i32, kind: EventKind, micros_after: i64) -> CallEvent {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seq as u64 ^ micros_after as u64);
    let mut event = call_event(&mut rng, 0, 100);
    event.call_id = call_id.into();
    event.seq = seq;
    event.kind = kind;
    event.time = T0 + micros_after;
    event
}

/// Runs the processor in process until the logs hold `expected` entries, then stops it.
async fn process_until(deployment: &Deployment, expected: u64) {
    let pipeline = callproof_processor::build(deployment.config(""), None)
        .await
        .expect("build");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(pipeline.run(async {
        let _ = stopped.await;
    }));
    deployment
        .wait_for_logged(expected, Duration::from_secs(60))
        .await;
    let _ = stop.send(());
    running.await.expect("join").expect("pipeline");
}

/// `(seq, source.gateway_seq)` of every event of `call_id`, in log order.
fn numbering(entries: &[Value], call_id: &str) -> Vec<(i64, Option<i64>)> {
    entries
        .iter()
        .filter(|entry| entry.pointer("/event/call_id").and_then(Value::as_str) == Some(call_id))
        .map(|entry| {
            (
                entry
                    .pointer("/event/seq")
                    .and_then(Value::as_i64)
                    .expect("seq"),
                entry.pointer("/source/gateway_seq").and_then(Value::as_i64),
            )
        })
        .collect()
}

/// Two gateway instances recorded a decision on one held call at the same moment, both as
/// event 2. The log numbers the later one 3 and keeps the gateway's 2 beside it; the call's
/// next events, which the gateways number from a view that saw 2 twice, follow on, also after
/// the processor restarted (the shift is in the checkpoint). A race that straddles a restart is
/// caught from the log's tail; a gap in a gateway's numbering stays a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_one_call_never_share_a_seq() {
    let deployment = Deployment::new(1).await;
    let producer = producer();
    let held = "0191d2a4-held-call";
    let raced = "0191d2a4-raced-across-restart";
    let gap = "0191d2a4-gap";
    produce(
        &producer,
        &deployment.topic,
        &[
            event(held, 0, EventKind::CallReceived, 0),
            event(held, 1, EventKind::ApprovalRequested, 1_000),
            event(held, 2, EventKind::ApprovalDecided, 2_000),
            event(held, 2, EventKind::ApprovalDecided, 2_001),
            event(gap, 0, EventKind::CallReceived, 3_500),
            // Two minutes later: the tail read back at the restart starts after the held
            // call's events, so only the checkpoint can carry its shift.
            event("0191d2a4-later", 0, EventKind::CallReceived, 120_000_000),
            event(raced, 0, EventKind::CallReceived, 120_003_000),
        ],
    )
    .await;
    process_until(&deployment, 7).await;

    // After a restart: the held call goes on from the gateways' view (3, 4), the raced call's
    // twin of event 0 arrives, and the gap call skips 1.
    produce(
        &producer,
        &deployment.topic,
        &[
            event(held, 3, EventKind::CallForwarded, 121_000_000),
            event(raced, 0, EventKind::CallDenied, 121_000_500),
            event(held, 4, EventKind::CallCompleted, 121_001_000),
            event(gap, 2, EventKind::CallDenied, 121_001_500),
        ],
    )
    .await;
    process_until(&deployment, 11).await;

    let logs = deployment.read_logs().await;
    let entries = &logs[&0];
    assert_eq!(
        numbering(entries, held),
        vec![
            (0, None),
            (1, None),
            (2, None),
            (3, Some(2)),
            (4, Some(3)),
            (5, Some(4)),
        ]
    );
    assert_eq!(numbering(entries, raced), vec![(0, None), (1, Some(0))]);
    assert_eq!(numbering(entries, gap), vec![(0, None), (2, None)]);
    deployment.audit_all();
}
