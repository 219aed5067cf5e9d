use serde_json::json;

use super::*;

fn event(call_id: &str, seq: i64, kind: &str, time: i64) -> ReportEvent {
    ReportEvent {
        partition: 0,
        log_index: time as u64,
        time_micros: time,
        event_id: Some(format!("{call_id}-{seq}")),
        call_id: Some(call_id.into()),
        seq: Some(seq),
        kind: kind.into(),
        subject: Some("ana".into()),
        function: Some("get_customer".into()),
        ..ReportEvent::default()
    }
}

fn decided(call_id: &str, seq: i64, time: i64, reviewer: &str, decision: &str) -> ReportEvent {
    ReportEvent {
        reviewer: Some(reviewer.into()),
        approval_decision: Some(decision.into()),
        allowed: Some(decision == "approve"),
        ..event(call_id, seq, "approval_decided", time)
    }
}

fn inputs() -> Inputs {
    Inputs {
        period: Period::from_micros(0, 1_000),
        generated_at: "2026-01-01T00:00:00Z".into(),
        verifier_key: "k".into(),
        context: Context {
            link_base: String::new(),
            policies: BTreeMap::from([(
                "get_customer".to_string(),
                json!({"allow_groups": ["support"], "allow_subjects": [], "detect": true}),
            )]),
            logs: vec![LogState {
                partition: 0,
                entries_from: 0,
                entries_to: 100,
                log_size: 120,
                root_hash: "root".into(),
                verified: true,
                ..LogState::default()
            }],
        },
    }
}

fn scenario() -> Vec<ReportEvent> {
    vec![
        // A refusal: call_denied is its first and only event.
        event("refused", 0, "call_denied", 1),
        // Denied by a reviewer, and expired: both complete.
        event("denied", 0, "call_received", 2),
        event("denied", 1, "approval_requested", 3),
        decided("denied", 2, 4, "rita", "deny"),
        event("expired", 0, "call_received", 5),
        event("expired", 1, "approval_requested", 6),
        event("expired", 2, "approval_expired", 7),
        // Approved by its own caller.
        event("self", 0, "call_received", 8),
        event("self", 1, "approval_requested", 9),
        decided("self", 2, 10, "ana", "approve"),
        event("self", 3, "call_forwarded", 11),
        event("self", 4, "call_completed", 12),
        // A gap, and one still open.
        event("gap", 0, "call_received", 13),
        event("gap", 2, "call_completed", 14),
        event("open", 0, "call_received", 15),
        // Begun before the period.
        event("before", 1, "call_completed", 16),
        // Outside the period: not counted.
        event("later", 0, "call_received", 5_000),
    ]
}

fn figure<'a>(report: &'a Report, section: &str, label: &str) -> &'a Figure {
    report
        .sections
        .iter()
        .find(|s| s.id == section)
        .and_then(|s| s.figures.iter().find(|f| f.label == label))
        .unwrap_or_else(|| panic!("no figure {label:?} in {section}"))
}

#[test]
fn refusals_denied_and_expired_approvals_are_complete_calls_and_gaps_are_not() {
    let report = build(&inputs(), &scenario());
    assert_eq!(report.events, 16);
    assert_eq!(report.calls, 6, "refused, denied, expired, self, gap, open");
    let incomplete = figure(
        &report,
        "CC7.2",
        "calls begun without their final event in the period, or with events missing",
    );
    assert_eq!(incomplete.value, 2);
    assert_eq!(incomplete.counts, Some(Counts::Calls));
    assert!(
        incomplete
            .search
            .as_deref()
            .unwrap()
            .contains(&url_encode(r#"call_id:"gap" OR call_id:"open""#)),
        "{incomplete:?}"
    );
    let exceptions = &report.sections[2].exceptions;
    assert_eq!(exceptions.len(), 2, "{exceptions:?}");
    assert!(exceptions[0].text.contains("event 1 is missing"));
    assert_eq!(exceptions[0].link.as_deref(), Some("/v1/calls/gap"));
    assert_eq!(
        figure(
            &report,
            "CC7.2",
            "calls begun before the period with events in it"
        )
        .value,
        1
    );
    assert_eq!(
        figure(
            &report,
            "CC6.2 / CC6.3",
            "calls refused (no valid token, policy, limits: call_denied)"
        )
        .value,
        1
    );
    assert_eq!(figure(&report, "CC8.1", "denied by a reviewer").value, 1);
    assert_eq!(figure(&report, "CC8.1", "approved by a reviewer").value, 1);
    assert_eq!(figure(&report, "CC8.1", "expired undecided").value, 1);
    let self_approved = figure(
        &report,
        "CC8.1",
        "self-approved calls (reviewer is the caller)",
    );
    assert_eq!(self_approved.value, 1);
    assert!(
        self_approved
            .search
            .as_deref()
            .unwrap()
            .contains(&url_encode(r#"event_id:"self-2""#))
    );
    assert_eq!(self_approved.proofs, ["/v1/proofs/0/10"]);
    assert_eq!(
        figure(
            &report,
            "CC8.1",
            "calls forwarded without an approval in the period"
        )
        .value,
        0
    );
}

#[test]
fn an_empty_set_links_a_search_that_finds_nothing() {
    let report = build(&inputs(), &[]);
    let agents = figure(
        &report,
        "CC6.1",
        "distinct acting agents (RFC 8693 `act`) of the calls received",
    );
    assert_eq!(agents.value, 0);
    assert!(
        agents
            .search
            .as_deref()
            .unwrap()
            .contains(&url_encode(r#"event_id:"none""#))
    );
}

#[test]
fn the_page_shows_values_not_json_and_links_exceptions() {
    let report = build(&inputs(), &scenario());
    let html = render_html(&report);
    assert!(html.contains("<li>allow groups: support</li>"), "{html}");
    for json in ["{\"", "[\"", "{&#34;", "[&#34;"] {
        assert!(!html.contains(json), "no JSON on the page: {json}");
    }
    assert!(
        html.contains("(<a href=\"/v1/calls/gap\">timeline</a>)"),
        "{html}"
    );
    assert!(
        html.contains("<li>verified when generated: yes</li>"),
        "{html}"
    );
}

#[test]
fn html_escapes_everything_that_comes_from_events() {
    let mut events = scenario();
    events[1].subject = Some("<script>alert(1)</script>".into());
    events[1].call_id = Some("c\"<b>".into());
    let html = render_html(&build(&inputs(), &events));
    assert!(!html.contains("<script>alert"));
    assert!(html.contains("&#60;script&#62;"), "{html}");
    assert!(html.contains("c&#34;&#60;b&#62;"), "{html}");
}

#[test]
fn a_script_in_a_function_name_a_principal_or_a_policy_value_is_escaped_once() {
    let script = "<script>alert(1)</script>";
    let mut events = scenario();
    for event in &mut events {
        event.function = Some(script.into());
        event.subject = Some(format!("{script}&"));
    }
    let mut inputs = inputs();
    inputs.context.policies = BTreeMap::from([(
        script.to_string(),
        json!({"allow_groups": [script], "approval": {"condition": script}}),
    )]);
    let html = render_html(&build(&inputs, &events));
    assert!(!html.contains("<script"), "{html}");
    // In a label, in a value nested in lists and objects, in a link: escaped exactly once.
    assert!(
        html.contains("<td>policy of &#60;script&#62;alert(1)&#60;/script&#62;</td>"),
        "{html}"
    );
    assert!(
        html.contains("<li>allow groups: &#60;script&#62;alert(1)&#60;/script&#62;</li>"),
        "{html}"
    );
    assert!(
        html.contains("<li>condition: &#60;script&#62;alert(1)&#60;/script&#62;</li>"),
        "{html}"
    );
    assert!(
        html.contains("from &#60;script&#62;alert(1)&#60;/script&#62;&#38;</td>"),
        "{html}"
    );
    assert!(!html.contains("&#38;#60;"), "escaped twice: {html}");
}

#[test]
fn the_page_is_for_phones_and_loads_nothing_from_elsewhere() {
    let html = render_html(&build(&inputs(), &scenario()));
    assert!(
        html.contains(r#"<meta name="viewport" content="width=device-width, initial-scale=1">"#)
    );
    for outside in ["<script", "<link", "<img", "@import", "url(", "src="] {
        assert!(!html.contains(outside), "{outside} in the page");
    }
}

#[test]
fn a_changed_figure_is_named() {
    let report = build(&inputs(), &scenario());
    let mut delivered = serde_json::to_value(&report).unwrap();
    assert!(differences(&report, &delivered).is_empty());
    delivered["sections"][3]["figures"][1]["value"] = json!(7);
    let found = differences(&report, &delivered);
    assert_eq!(
        found,
        ["CC8.1: figure \"approved by a reviewer\": its value is 7, the entries give 1"]
    );
    let html = render_html(&report).replace(
        "<td>approved by a reviewer</td><td>1</td>",
        "<td>approved by a reviewer</td><td>7</td>",
    );
    let difference = html_difference(&report, html.as_bytes()).unwrap();
    assert!(
        difference.contains("approved by a reviewer</td><td>7"),
        "{difference}"
    );
    assert_eq!(
        html_difference(&report, render_html(&report).as_bytes()),
        None
    );
}

#[test]
fn entries_are_read_with_their_approval_decision() {
    let entry = json!({"event": {
        "event_id": "e", "call_id": "c", "seq": 2, "kind": "approval_decided", "time": 5,
        "function": "f", "principal": {"subject": "ana", "actor": {"subject": "agent-7"}},
        "decision": {"allowed": false}, "approval": {"reviewer": "rita", "decision": "deny"},
        "masking": [{"detector": "EMAIL"}, {"detector": "EMAIL"}],
    }, "source": {}});
    let event = ReportEvent::from_entry(1, 9, &entry).unwrap();
    assert_eq!(event.approval_decision.as_deref(), Some("deny"));
    assert_eq!(event.agent.as_deref(), Some("agent-7"));
    assert_eq!(event.detectors.len(), 1);
    assert!(ends_call(&event.kind, event.approval_decision.as_deref()));
    assert_eq!(
        ReportEvent::from_entry(1, 10, &json!({"undecodable": {}})),
        None
    );
}

#[test]
fn an_event_after_the_final_one_makes_a_call_incomplete_as_its_timeline_does() {
    let events = vec![
        event("stray", 0, "call_received", 1),
        event("stray", 1, "call_completed", 2),
        event("stray", 2, "call_forwarded", 3),
        event("done", 0, "call_received", 4),
        event("done", 1, "call_completed", 5),
    ];
    let report = build(&inputs(), &events);
    let incomplete = figure(
        &report,
        "CC7.2",
        "calls begun without their final event in the period, or with events missing",
    );
    assert_eq!(incomplete.value, 1, "{incomplete:?}");
    assert!(
        incomplete
            .search
            .as_deref()
            .unwrap()
            .contains(&url_encode(r#"call_id:"stray""#)),
        "{incomplete:?}"
    );
}

#[test]
fn a_page_of_the_first_renderer_still_verifies_and_a_changed_one_does_not() {
    let report = build(&inputs(), &scenario());
    let first = crate::html_v1::render_html(&report);
    assert_ne!(
        first,
        render_html(&report),
        "the renderers differ, or this test proves nothing"
    );
    assert_eq!(html_difference(&report, first.as_bytes()), None);
    let changed = first.replacen("<td>", "<td>1", 1);
    assert!(html_difference(&report, changed.as_bytes()).is_some());
}
