//! Integration tests of the evidence API over what the real processor wrote from events on the
//! real broker (`KAFKA_BROKERS`, default `127.0.0.1:9092`), checked with the real
//! `callproof-verify`.

mod support;

use std::collections::BTreeSet;

use callproof_schemas::{EventKind, Mcp, McpOutcome};
use callproof_tlog::bundle::BundleFiles;
use serde_json::Value;
use support::{Deployment, event, flip_byte, now_micros, pack, scenario, verify};

fn error_code(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or_default();
    value
        .pointer("/error/code")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A change made to a bundle's files.
type Tamper = Box<dyn Fn(&mut BundleFiles)>;

fn hits(page: &Value) -> &Vec<Value> {
    page["hits"].as_array().expect("hits")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditors_search_replay_prove_report_and_export_and_tampering_is_named() {
    let events = scenario(now_micros() - 60_000_000);
    let deployment = Deployment::start(&events).await;
    let d = &deployment;

    // Access: a token is required, and membership of an auditor group; bad parameters are 400.
    let (status, body) = d.get_with("/v1/search", None).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "unauthenticated")
    );
    let (status, body) = d.get_with("/v1/search", Some("not-a-jwt")).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "unauthenticated")
    );
    // Oversized input is refused before it is decoded: a token over the limit with 401, headers
    // over theirs with 431; /metrics counts both from a series present since start.
    let long_token = "a".repeat(callproof_oidc::MAX_TOKEN_BYTES + 1);
    let (status, body) = d.get_with("/v1/search", Some(&long_token)).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (401, "unauthenticated")
    );
    let huge_token = "a".repeat(callproof_oidc::MAX_HEADER_BYTES + 1);
    let (status, body) = d.get_with("/v1/search", Some(&huge_token)).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (431, "headers_too_large")
    );
    let (status, metrics) = d.get_with("/metrics", None).await;
    let metrics = String::from_utf8_lossy(&metrics);
    assert_eq!(status, 200);
    // Other tests of this process may have been refused too: the series must exist, the count
    // of oversized headers be at least this one.
    assert!(
        !metrics
            .contains(r#"callproof_evidence_requests_refused_total{reason="headers_too_large"} 0"#),
        "{metrics}"
    );
    for series in [
        r#"callproof_evidence_requests_refused_total{reason="headers_too_large"} "#,
        r#"callproof_evidence_requests_refused_total{reason="forbidden"} "#,
    ] {
        assert!(metrics.contains(series), "{series} not in {metrics}");
    }
    let support_token = d.issuer.token("bo", &["support"]);
    let (status, body) = d.get_with("/v1/integrity", Some(&support_token)).await;
    assert_eq!((status, error_code(&body).as_str()), (403, "forbidden"));
    for bad in [
        "/v1/search?kind=call_exploded",
        "/v1/search?limit=0",
        "/v1/search?q=function:(",
        "/v1/search?from=yesterday",
        "/v1/search?colour=blue",
        "/v1/search?cursor=garbage",
        "/v1/reports/soc2",
        "/v1/export?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z",
        "/v1/proofs/0/notanumber",
        "/v1/logs/0/consistency?old=5&new=2",
    ] {
        let (status, body) = d.get(bad).await;
        assert_eq!(status, 400, "{bad}: {}", String::from_utf8_lossy(&body));
        assert_eq!(error_code(&body), "bad_request", "{bad}");
    }
    assert_eq!(d.get("/v1/calls/no-such-call").await.0, 404);

    // Search: query string and filters, newest first, each hit with its proof.
    let refund = d.json("/v1/search?q=refund").await;
    let refund_calls: BTreeSet<&str> = hits(&refund)
        .iter()
        .filter_map(|hit| hit["call_id"].as_str())
        .collect();
    assert_eq!(refund_calls, BTreeSet::from(["call-ok"]), "{refund}");
    let denied = d
        .json("/v1/search?kind=call_denied&principal=bo&decision=deny")
        .await;
    assert_eq!(hits(&denied).len(), 1, "{denied}");
    let masked = d
        .json(&format!("/v1/search?detector=EMAIL&{}", d.period_query()))
        .await;
    assert_eq!(hits(&masked)[0]["call_id"], "call-ok", "{masked}");
    let mut seen = Vec::new();
    let mut next = Some("/v1/search?limit=3&agent=agent-7".to_string());
    while let Some(link) = next {
        let page = d.json(&link).await;
        assert!(hits(&page).len() <= 3);
        for hit in hits(&page) {
            assert!(hit["proof"].as_str().unwrap().starts_with("/v1/proofs/"));
            seen.push((
                hit["time"].as_str().unwrap().to_string(),
                hit["partition"].as_i64().unwrap(),
                hit["log_index"].as_u64().unwrap(),
            ));
        }
        next = page["next"].as_str().map(str::to_string);
    }
    assert_eq!(seen.len(), events.len(), "every event once over the pages");
    // Each answer says how far each partition's log is searchable: here, all of it.
    let searchable = refund["searchable"].as_object().expect("searchable");
    assert_eq!(searchable.len(), 2, "{refund}");
    let total: u64 = searchable.values().filter_map(Value::as_u64).sum();
    assert_eq!(total, events.len() as u64, "{refund}");
    // Found in the object store, through a split cache of the evidence API's own: neither the
    // processor's scratch directory nor any shared volume.
    let cached = std::fs::read_dir(d.dir.path().join("evidence-cache"))
        .expect("cache dir")
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".split"))
        .count();
    assert!(cached > 0, "no split in the evidence API's cache");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), events.len());
    assert!(
        seen.windows(2).all(|pair| pair[0] >= pair[1]),
        "newest first"
    );

    // Replay: whole timelines in order; a sequence gap is named.
    let approved = d.json("/v1/calls/call-approved").await;
    let stages: Vec<&str> = approved["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|event| event["stage"].as_str().unwrap())
        .collect();
    assert_eq!(
        stages,
        [
            "authentication and request",
            "approval",
            "approval",
            "forwarding",
            "response"
        ]
    );
    assert_eq!(approved["complete"], true, "{approved}");
    let gap = d.json("/v1/calls/call-gap").await;
    assert_eq!(gap["complete"], false);
    assert!(
        gap["problems"].to_string().contains("event 1 is missing"),
        "{gap}"
    );
    let big = d.json("/v1/calls/call-big").await;
    assert!(
        big["events"][0]["event"]["request"]["body"]
            .as_str()
            .unwrap()
            .len()
            > 70_000,
        "the blob is put back"
    );

    // Proofs over HTTP, checked by the real callproof-verify.
    let key_file = d.write("log.vkey", &d.get("/v1/key").await.1);
    let hit = &hits(&denied)[0];
    let (partition, index) = (
        hit["partition"].as_i64().unwrap(),
        hit["log_index"].as_u64().unwrap(),
    );
    let proof = d.json(&format!("/v1/proofs/{partition}/{index}")).await;
    assert_eq!(proof["entry"]["event"]["call_id"], "call-denied");
    assert!(
        proof["proof"]
            .as_str()
            .unwrap()
            .starts_with("c2sp.org/tlog-proof@v1\n")
    );
    let entry_file = d.write(
        "entry",
        &d.get(&format!("/v1/proofs/{partition}/{index}/entry"))
            .await
            .1,
    );
    let proof_file = d.write(
        "proof",
        &d.get(&format!("/v1/proofs/{partition}/{index}/proof"))
            .await
            .1,
    );
    let key = key_file.to_str().unwrap();
    let (code, output) = verify(&[
        "proof",
        "--key",
        key,
        entry_file.to_str().unwrap(),
        proof_file.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{output}");

    // Consistency between a kept checkpoint and the latest, from the raw C2SP paths.
    let checkpoints = d.json(&format!("/v1/logs/{partition}/checkpoints")).await;
    let latest_size = checkpoints["latest"]["size"].as_u64().unwrap();
    let old_size = checkpoints["kept"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|kept| kept["size"].as_u64())
        .find(|size| *size > 0 && *size < latest_size)
        .expect("the processor appended in more than one batch, so a smaller checkpoint is kept");
    let old = d.write(
        "old-checkpoint",
        &d.get(&format!("/logs/{partition}/checkpoints/{old_size}"))
            .await
            .1,
    );
    let new = d.write(
        "new-checkpoint",
        &d.get(&format!("/logs/{partition}/checkpoint")).await.1,
    );
    let consistency = d.write(
        "consistency",
        &d.get(&format!(
            "/v1/logs/{partition}/consistency?old={old_size}&new={latest_size}&format=text"
        ))
        .await
        .1,
    );
    let (code, output) = verify(&[
        "consistency",
        "--key",
        key,
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        consistency.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{output}");
    let (status, tile) = d
        .get(&format!("/logs/{partition}/tile/0/000.p/{latest_size}"))
        .await;
    assert_eq!((status, tile.len() as u64), (200, 32 * latest_size));
    // Only tlog-tiles paths are served: nothing else in the store can be reached.
    for bad in [
        "tile/0/abc",
        "tile/..%2F..%2F..%2Fblobs",
        "tile/entries/000.p/0",
    ] {
        assert_eq!(
            d.get(&format!("/logs/{partition}/{bad}")).await.0,
            400,
            "{bad}"
        );
    }

    // The SOC 2 report, in JSON and HTML.
    let report = d
        .json(&format!("/v1/reports/soc2?{}", d.period_query()))
        .await;
    let section = |id: &str| {
        report["sections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|section| section["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no section {id}"))
    };
    let figure = |section: &Value, label: &str| {
        section["figures"]
            .as_array()
            .unwrap()
            .iter()
            .find(|figure| figure["label"] == label)
            .cloned()
            .unwrap_or_else(|| panic!("no figure {label:?} in {section}"))
    };
    assert_eq!(report["events"], events.len());
    // The policy in force, with what admits callers beside the lists and what holds calls; the
    // approval's webhook (a secret, not the evidence API's) is not there.
    let policy = figure(&section("CC6.2 / CC6.3"), "policy of get_customer")["value"].clone();
    assert_eq!(
        policy["allow_rule"],
        r#"has(principal.actor) && principal.actor.sub == "support-copilot""#
    );
    assert_eq!(policy["approval"]["condition"], "args.amount > 1000");
    assert_eq!(
        policy["approval"]["approver_groups"],
        serde_json::json!(["approvers"])
    );
    assert!(!policy.to_string().contains("webhook"), "{policy}");
    assert_eq!(
        figure(
            &section("CC6.2 / CC6.3"),
            "calls refused (no valid token, policy, limits: call_denied)"
        )["value"],
        1
    );
    let cc81 = section("CC8.1");
    assert_eq!(figure(&cc81, "approved by a reviewer")["value"], 2);
    assert_eq!(
        figure(&cc81, "self-approved calls (reviewer is the caller)")["value"],
        1
    );
    assert!(
        cc81["exceptions"].to_string().contains("call-self"),
        "{cc81}"
    );
    let cc72 = section("CC7.2");
    // The open call has no final event and the gapped one misses event 1; the refusal, the
    // denied approval and the expired one are complete calls.
    let cc72_exceptions = cc72["exceptions"].to_string();
    for incomplete in ["call-open", "call-gap"] {
        assert!(cc72_exceptions.contains(incomplete), "{incomplete}: {cc72}");
        assert!(
            cc72_exceptions.contains(&format!("/v1/calls/{incomplete}")),
            "each exception links its timeline: {cc72}"
        );
    }
    for complete in ["call-denied", "call-refused", "call-expired", "call-ok"] {
        assert!(!cc72_exceptions.contains(complete), "{complete}: {cc72}");
    }
    assert_eq!(
        figure(
            &cc72,
            "calls begun without their final event in the period, or with events missing"
        )["value"],
        2
    );
    assert_eq!(
        report["calls"], 9,
        "every call of the scenario began in the period"
    );
    assert_eq!(figure(&cc81, "denied by a reviewer")["value"], 1);
    assert_eq!(figure(&cc81, "expired undecided")["value"], 1);
    assert!(
        cc72["figures"]
            .to_string()
            .contains("\"verified_when_generated\":true"),
        "{cc72}"
    );
    // Each figure that counts lists exactly what it counts: run the search it links and
    // count its hits, or their distinct calls, principals or agents.
    let mut n_checked = 0;
    for section in report["sections"].as_array().unwrap() {
        for figure in section["figures"].as_array().unwrap() {
            let search = figure["search"]
                .as_str()
                .unwrap_or_else(|| panic!("no search behind {figure}"));
            let Some(counts) = figure["counts"].as_str() else {
                continue;
            };
            let mut hits_seen: Vec<Value> = Vec::new();
            let mut next = Some(format!("{search}&limit=100"));
            while let Some(link) = next {
                let page = d.json(&link).await;
                hits_seen.extend(hits(&page).iter().cloned());
                next = page["next"].as_str().map(str::to_string);
            }
            let distinct = |field: &str| {
                hits_seen
                    .iter()
                    .filter_map(|hit| hit[field].as_str())
                    .collect::<BTreeSet<_>>()
                    .len()
            };
            let counted = match counts {
                "events" => hits_seen.len(),
                "calls" => distinct("call_id"),
                "principals" => distinct("principal"),
                "agents" => distinct("agent"),
                other => panic!("unknown count {other:?}"),
            };
            assert_eq!(
                figure["value"].as_u64(),
                Some(counted as u64),
                "{}: {search} finds {counted} {counts}",
                figure["label"]
            );
            n_checked += 1;
        }
    }
    assert!(n_checked >= 20, "only {n_checked} figures checked");
    assert!(
        figure(&section("C1.1"), "events with EMAIL masked")["search"]
            .as_str()
            .unwrap()
            .contains("detector=EMAIL")
    );
    let (status, html) = d
        .get(&format!(
            "/v1/reports/soc2?{}&format=html",
            d.period_query()
        ))
        .await;
    let html = String::from_utf8_lossy(&html);
    assert_eq!(status, 200);
    assert!(
        html.contains("<h2>CC6.1") && html.contains("call-self"),
        "{html}"
    );
    assert!(
        !html.contains("{&quot;") && !html.contains("[&quot;") && !html.contains("{\""),
        "values are shown as text, not JSON: {html}"
    );
    assert!(
        html.contains("<a href=\"/v1/calls/call-open\">timeline</a>"),
        "{html}"
    );

    // A denied approval ends its call.
    let refused = d.json("/v1/calls/call-refused").await;
    assert_eq!(refused["complete"], true, "{refused}");
    let denied_call = d.json("/v1/calls/call-denied").await;
    assert_eq!(denied_call["complete"], true, "{denied_call}");

    // The evidence bundle verifies offline.
    let (status, bundle) = d.get(&format!("/v1/export?{}", d.period_query())).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bundle));
    let bundle_file = d.write("bundle.tar.gz", &bundle);
    let bundle_path = bundle_file.to_str().unwrap();
    let (code, output) = verify(&["bundle", "--key", key, bundle_path]);
    assert_eq!(code, 0, "{output}");
    assert!(
        output.contains(&format!("{} entries", events.len())),
        "{output}"
    );
    // The bundle's report is the API's report of the same period, but for when it was made.
    let files = callproof_tlog::bundle::read_bundle(bundle.as_slice()).unwrap();
    let mut bundled: Value = serde_json::from_slice(&files["report.json"]).unwrap();
    let mut served = report.clone();
    bundled["generated_at"] = Value::Null;
    served["generated_at"] = Value::Null;
    assert_eq!(bundled, served);

    // Whatever is taken out of the bundle or changed in it is named.
    let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let part = &manifest["partitions"][0];
    let p = part["partition"].as_i64().unwrap();
    let middle =
        (part["entries_from"].as_u64().unwrap() + part["entries_to"].as_u64().unwrap()) / 2;
    let tamper_cases: Vec<(&str, Tamper, String)> = vec![
        (
            "an entry, its proof and its manifest line removed",
            Box::new(move |files: &mut BundleFiles| {
                files.remove(&format!("logs/{p}/entries/{middle}"));
                files.remove(&format!("logs/{p}/proofs/{middle}"));
                let mut manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
                manifest["partitions"][0]["entries"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|index| index.as_u64() != Some(middle));
                files.insert(
                    "manifest.json".into(),
                    serde_json::to_vec_pretty(&manifest).unwrap(),
                );
            }),
            format!("partition {p} index {middle}: logs/{p}/entries/{middle}: missing"),
        ),
        (
            "report.html rewritten",
            Box::new(|files: &mut BundleFiles| {
                let html = String::from_utf8(files["report.html"].clone()).unwrap();
                let html = html.replace(
                    "<td>approved by a reviewer</td><td>2</td>",
                    "<td>approved by a reviewer</td><td>3</td>",
                );
                files.insert("report.html".into(), html.into_bytes());
            }),
            "report.html: is not the page of the report the entries give".to_string(),
        ),
        (
            "a figure of report.json changed",
            Box::new(|files: &mut BundleFiles| {
                let json = String::from_utf8(files["report.json"].clone()).unwrap();
                let json = json.replacen("\"value\": 1,", "\"value\": 0,", 1);
                files.insert("report.json".into(), json.into_bytes());
            }),
            "report.json: CC".to_string(),
        ),
    ];
    for (what, tamper, expected) in tamper_cases {
        let mut files = files.clone();
        tamper(&mut files);
        let tampered = d.write("tampered-bundle.tar.gz", &pack(&files));
        let (code, output) = verify(&["bundle", "--key", key, tampered.to_str().unwrap()]);
        assert_eq!(code, 1, "{what}: {output}");
        assert!(
            output.contains(&expected),
            "{what}: {expected:?} not in {output}"
        );
    }

    let integrity = d.json("/v1/integrity").await;
    assert_eq!(integrity["valid"], true, "{integrity}");

    // Tamper evidence: one byte changed in an entry bundle, a tile, a blob or a checkpoint
    // is named by the API's integrity check and by callproof-verify.
    let ok = d.json("/v1/calls/call-ok").await;
    let ok_partition = ok["events"][0]["partition"].as_i64().unwrap();
    let ok_index = ok["events"][0]["log_index"].as_u64().unwrap();
    let big_index = big["events"][0]["log_index"].as_u64().unwrap();
    let big_partition = big["events"][0]["partition"].as_i64().unwrap();
    let size_of = |partition: i64| {
        let d = &deployment;
        async move {
            d.json(&format!("/v1/logs/{partition}/checkpoints")).await["latest"]["size"]
                .as_u64()
                .unwrap()
        }
    };
    let ok_size = size_of(ok_partition).await;
    let log_dir = d.store_dir().join(format!("logs/{ok_partition}"));
    let bundle_object = log_dir.join(format!("tile/entries/000.p/{ok_size}"));
    // The byte in the middle of entry `ok_index` (each entry is a 2-byte length, then bytes).
    let entries = std::fs::read(&bundle_object).unwrap();
    let mut offset = 0;
    for _ in 0..ok_index {
        offset += 2 + usize::from(u16::from_be_bytes([entries[offset], entries[offset + 1]]));
    }
    let entry_middle =
        offset + 2 + usize::from(u16::from_be_bytes([entries[offset], entries[offset + 1]])) / 2;
    let blob_hex = {
        let proof = d
            .json(&format!("/v1/proofs/{big_partition}/{big_index}"))
            .await;
        let raw: Value = serde_json::from_slice(
            &base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                proof["entry_base64"].as_str().unwrap(),
            )
            .unwrap(),
        )
        .unwrap();
        raw["blobs"]
            .as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    let cases = [
        (
            "entry bundle",
            bundle_object.clone(),
            entry_middle,
            ok_partition,
            Some(ok_index),
        ),
        (
            "tile",
            log_dir.join(format!("tile/0/000.p/{ok_size}")),
            32 * ok_index as usize + 7,
            ok_partition,
            Some(ok_index),
        ),
        (
            "blob",
            d.store_dir().join(format!("blobs/sha256/{blob_hex}")),
            20,
            big_partition,
            Some(big_index),
        ),
        (
            "checkpoint",
            log_dir.join("checkpoint"),
            3,
            ok_partition,
            None,
        ),
    ];
    for (what, object, position, partition, index) in cases {
        let original = flip_byte(&object, position);
        let integrity = d
            .json(&format!("/v1/integrity?partition={partition}"))
            .await;
        let failure = &integrity["partitions"][0]["failure"];
        assert_eq!(integrity["valid"], false, "{what}: {integrity}");
        assert_eq!(integrity["partitions"][0]["partition"], partition, "{what}");
        assert_eq!(failure["index"].as_u64(), index, "{what}: {failure}");
        let name = object
            .strip_prefix(d.store_dir())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(failure["object"], name.as_str(), "{what}: {failure}");

        if what == "checkpoint" {
            // The API will not vouch for a log whose checkpoint does not verify.
            let (status, body) = d.get(&format!("/v1/export?{}", d.period_query())).await;
            assert_eq!(
                (status, error_code(&body).as_str()),
                (409, "integrity_failure"),
                "{what}"
            );
        } else {
            let (status, bundle) = d.get(&format!("/v1/export?{}", d.period_query())).await;
            assert_eq!(status, 200, "{what}");
            let tampered = d.write(
                &format!("tampered-{what}.tar.gz").replace(' ', "-"),
                &bundle,
            );
            let (code, output) = verify(&["bundle", "--key", key, tampered.to_str().unwrap()]);
            assert_eq!(code, 1, "{what}: {output}");
            assert!(
                output.contains(&format!("partition {partition} index")),
                "{what}: {output}"
            );
            if what != "tile" {
                // The tampered entry itself fails (a tile breaks its neighbours' proofs).
                assert!(
                    output.contains(&format!("partition {partition} index {}", index.unwrap())),
                    "{what}: {output}"
                );
            }
        }
        if what != "blob" {
            let (code, output) =
                verify(&["log", "--quiet", "--key", key, log_dir.to_str().unwrap()]);
            assert_eq!(code, 1, "{what}: {output}");
            assert!(
                output.contains(&format!("logs/{partition}/")),
                "{what}: {output}"
            );
        }
        std::fs::write(&object, original).unwrap();
    }
    let integrity = d.json("/v1/integrity").await;
    assert_eq!(integrity["valid"], true, "restored: {integrity}");
}

/// `mcp_server=`, `mcp_tool=` and `mcp_outcome=` filter as `function=` does: exact values,
/// ANDed with each other and the rest, kept by the `next` link, a bad outcome refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_calls_are_found_by_the_server_tool_and_outcome_filters() {
    let start = now_micros() - 60_000_000;
    let mut events = Vec::new();
    for (offset, (call_id, server, tool, outcome)) in [
        ("call-crm-get", "crm", "get_customer", McpOutcome::Result),
        (
            "call-crm-delete",
            "crm",
            "delete_customer",
            McpOutcome::ToolError,
        ),
        (
            "call-billing-get",
            "billing",
            "get_customer",
            McpOutcome::ToolError,
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let time = start + 1_000 * offset as i64;
        let mut completed = event(call_id, 0, EventKind::CallCompleted, time, "ana");
        completed.function = format!("mcp:{server}__{tool}");
        completed.mcp = Some(Mcp {
            method: "tools/call".into(),
            server: Some(server.into()),
            tool: Some(tool.into()),
            outcome: Some(outcome),
            ..Mcp::default()
        });
        events.push(completed);
    }
    events.push(event(
        "call-plain",
        0,
        EventKind::CallCompleted,
        start + 5_000,
        "ana",
    ));
    let d = Deployment::start(&events).await;
    let calls = |page: &Value| -> Vec<String> {
        hits(page)
            .iter()
            .filter_map(|hit| hit["call_id"].as_str().map(str::to_string))
            .collect()
    };

    for (query, expected) in [
        ("mcp_server=crm", vec!["call-crm-delete", "call-crm-get"]),
        (
            "mcp_tool=get_customer",
            vec!["call-billing-get", "call-crm-get"],
        ),
        (
            "mcp_outcome=tool_error",
            vec!["call-billing-get", "call-crm-delete"],
        ),
        (
            "mcp_server=crm&mcp_outcome=tool_error",
            vec!["call-crm-delete"],
        ),
        ("mcp_tool=get_customer&principal=bo", vec![]),
        ("mcp_tool=customer", vec![]),
    ] {
        let page = d.json(&format!("/v1/search?{query}")).await;
        assert_eq!(calls(&page), expected, "{query}");
    }

    // Paging keeps the filters.
    let first = d.json("/v1/search?mcp_tool=get_customer&limit=1").await;
    assert_eq!(calls(&first), ["call-billing-get"]);
    let next = first["next"].as_str().expect("a next page");
    assert!(next.contains("mcp_tool=get_customer"), "{next}");
    let second = d.json(next).await;
    assert_eq!(calls(&second), ["call-crm-get"]);
    assert!(second["next"].is_null(), "{second}");

    let (status, body) = d.get("/v1/search?mcp_outcome=success").await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (400, "bad_request"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}
