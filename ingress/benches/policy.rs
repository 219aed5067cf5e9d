//! Policy evaluation per call: a rule compiled once, evaluated per request, as the gateway does
//! (a context from the shared environment, the variables the rule reads built from the call).
//!
//! The hand-written condition language CEL replaced is gone; when both lived, the same run gave
//! 1.51 us for `cel/amount_threshold` against 72 ns for it (21x), and 3.39 us against 256 ns for
//! `cel/list_and_membership` (13x). What stays meaningful is the comparison, in the same run,
//! with what the gateway pays for every call anyway, so the figures say whether policy could be
//! what limits it:
//! - `baseline/jwt_verify_eddsa`: verifying the caller's token (EdDSA, as `oidc` does per call,
//!   key lookup aside);
//! - `baseline/mask_arguments`: masking the same arguments with the detectors on.
//!
//! `cargo bench -p callproof-ingress --bench policy`.

use std::hint::black_box;
use std::time::Duration;

use callproof_config::Rule;
use callproof_config::policy::{Outcome, Vocabulary};
use callproof_ingress::rules::CallFacts;
use callproof_masking::{FieldRules, Masker, MaskingConfig};
use callproof_schemas::{Actor, Principal};
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::{Map, Value, json};

fn arguments() -> Value {
    json!({
        "order_id": "ORD-20240115-000042",
        "amount": 1234.56,
        "currency": "EUR",
        "env": "prod",
        "items": [{"sku": "AB-77", "qty": 2, "price": 9.5}, {"sku": "ZX-9", "qty": 1, "price": 120}],
        "customer": {"tier": "gold", "region": "eu-west-1", "since": "2019-04-01"},
        "note": "customer asked about the delivery window, prefers mornings"
    })
}

fn principal() -> Principal {
    Principal {
        issuer: "https://issuer.example".into(),
        subject: "alice".into(),
        email: Some("alice@example.com".into()),
        groups: vec!["staff".into(), "support".into(), "eu".into()],
        client_id: Some("agent-runner".into()),
        actor: Some(Actor {
            subject: "agent-7".into(),
            issuer: None,
            client_id: None,
        }),
        authentication: None,
    }
}

fn policy(c: &mut Criterion) {
    let arguments = arguments();
    let principal = principal();
    let claims = Map::from_iter([("tenant".to_string(), json!("acme"))]);
    let names = vec!["tenant".to_string()];
    let facts = CallFacts {
        principal: &principal,
        claims: &claims,
        function: "refund",
        arguments: Some(&arguments),
        now: Duration::from_secs(1_772_620_200),
    };
    let compile = |source: &str| Rule::compile(source, Vocabulary { claims: &names }).unwrap();

    let mut group = c.benchmark_group("policy");
    // The floor: a context, one small variable, one comparison.
    let floor = compile(r#"call.function == "refund""#);
    assert_eq!(facts.evaluate(&floor), Outcome::Holds);
    group.bench_function("cel/function_name", |b| {
        b.iter(|| black_box(&facts).evaluate(black_box(&floor)))
    });
    let threshold = compile(r#"args.amount > 1000 || args.env == "prod""#);
    assert_eq!(facts.evaluate(&threshold), Outcome::Holds);
    group.bench_function("cel/amount_threshold", |b| {
        b.iter(|| black_box(&facts).evaluate(black_box(&threshold)))
    });
    let nested =
        compile(r#"args.items.exists(i, i.price > 100) && args.currency in ["EUR", "USD"]"#);
    assert_eq!(facts.evaluate(&nested), Outcome::Holds);
    group.bench_function("cel/list_and_membership", |b| {
        b.iter(|| black_box(&facts).evaluate(black_box(&nested)))
    });
    let caller = compile(
        r#""support" in principal.groups && has(principal.actor) && claims.tenant == "acme""#,
    );
    assert_eq!(facts.evaluate(&caller), Outcome::Holds);
    group.bench_function("cel/group_agent_claim", |b| {
        b.iter(|| black_box(&facts).evaluate(black_box(&caller)))
    });
    let hours = compile(
        r#"now.getDayOfWeek("Europe/Paris") in [1, 2, 3, 4, 5] && now.getHours("Europe/Paris") >= 9 && now.getHours("Europe/Paris") < 18"#,
    );
    assert_eq!(facts.evaluate(&hours), Outcome::Holds);
    group.bench_function("cel/business_hours_paris", |b| {
        b.iter(|| black_box(&facts).evaluate(black_box(&hours)))
    });

    let key = callproof_tests::issuer::ed_key("bench").unwrap();
    let now = callproof_tests::issuer::now_secs();
    let token = callproof_tests::issuer::sign(
        &key,
        &json!({"iss": "https://issuer.example", "sub": "alice", "aud": "callproof",
                "exp": now + 3600, "iat": now, "groups": ["support"]}),
    );
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.jwk.clone()).unwrap();
    let decoding = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_audience(&["callproof"]);
    validation.set_issuer(&["https://issuer.example"]);
    group.bench_function("baseline/jwt_verify_eddsa", |b| {
        b.iter(|| {
            jsonwebtoken::decode::<Map<String, Value>>(black_box(&token), &decoding, &validation)
                .unwrap()
        })
    });

    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let no_rules = FieldRules::parse::<&str>(&[]).unwrap();
    group.bench_function("baseline/mask_arguments", |b| {
        b.iter_batched(
            || arguments.clone(),
            |mut document| masker.mask_json(&mut document, &no_rules, true).unwrap(),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(50)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = policy
}
criterion_main!(benches);
