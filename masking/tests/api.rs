//! The public API as ingress uses it.

use callproof_masking::{FieldRules, Finding, Masker, MaskingConfig, Replacement};
use serde_json::json;

fn masker() -> Masker {
    Masker::new(&MaskingConfig::default()).unwrap()
}

fn finding(detector: &str, path: &str, count: u32) -> Finding {
    Finding {
        detector: detector.to_owned(),
        path: path.to_owned(),
        count,
    }
}

#[test]
fn field_rules_mask_whatever_the_field_holds() {
    let rules = FieldRules::parse(&["/user/password", "/cards/*/cvv", "api_key"]).unwrap();
    let mut doc = json!({
        "user": {"password": {"nested": [1, 2]}, "name": "ann"},
        "cards": [{"cvv": 123}, {"cvv": "456"}],
        "deep": {"deeper": {"api_key": ["k1", "k2"]}},
    });
    let findings = masker().mask_json(&mut doc, &rules, false).unwrap();
    assert_eq!(
        doc,
        json!({
            "user": {"password": "[REDACTED:FIELD]", "name": "ann"},
            "cards": [{"cvv": "[REDACTED:FIELD]"}, {"cvv": "[REDACTED:FIELD]"}],
            "deep": {"deeper": {"api_key": "[REDACTED:FIELD]"}},
        })
    );
    assert_eq!(findings.len(), 4);
    assert!(findings.contains(&finding("FIELD", "/cards/1/cvv", 1)));
    assert!(findings.contains(&finding("FIELD", "/deep/deeper/api_key", 1)));
}

#[test]
fn detectors_mask_strings_at_any_depth_and_report_paths() {
    let mut doc = json!({
        "args": {
            "note": "card 4111 1111 1111 1111, mail ann@example.com, again 5500-0000-0000-0004",
            "list": ["ssn 123-45-6789", "nothing here"],
        },
        "amount": 12.5,
    });
    let findings = masker()
        .mask_json(&mut doc, &FieldRules::empty(), true)
        .unwrap();
    assert_eq!(
        doc["args"]["note"],
        "card [REDACTED:CREDIT_CARD], mail [REDACTED:EMAIL], again [REDACTED:CREDIT_CARD]"
    );
    assert_eq!(doc["args"]["list"][0], "ssn [REDACTED:US_SSN]");
    assert_eq!(
        findings,
        vec![
            finding("US_SSN", "/args/list/0", 1),
            finding("CREDIT_CARD", "/args/note", 2),
            finding("EMAIL", "/args/note", 1),
        ]
    );
    let serialized = serde_json::to_string(&findings).unwrap();
    assert!(!serialized.contains("4111"));
}

#[test]
fn card_numbers_held_in_json_numbers_are_masked() {
    let mut doc = json!({"pan": 4111111111111111u64, "ts": 1705312200123u64});
    let findings = masker()
        .mask_json(&mut doc, &FieldRules::empty(), true)
        .unwrap();
    assert_eq!(
        doc,
        json!({"pan": "[REDACTED:CREDIT_CARD]", "ts": 1705312200123u64})
    );
    assert_eq!(findings, vec![finding("CREDIT_CARD", "/pan", 1)]);
}

#[test]
fn keys_are_scanned_when_configured() {
    let config = MaskingConfig {
        scan_keys: true,
        ..MaskingConfig::default()
    };
    let mut doc = json!({"by_user": {"ann@example.com": 1, "bob@example.com": 2}});
    let findings = Masker::new(&config)
        .unwrap()
        .mask_json(&mut doc, &FieldRules::empty(), true)
        .unwrap();
    let inner = doc["by_user"].as_object().unwrap();
    assert!(inner.contains_key("[REDACTED:EMAIL]"));
    assert!(inner.contains_key("[REDACTED:EMAIL]#2"));
    assert_eq!(findings.len(), 2);
    assert!(findings.iter().all(|f| !f.path.contains('@')));
}

#[test]
fn text_without_pii_is_borrowed() {
    let (masked, findings) = masker().mask_text("order 2024-01-15 shipped");
    assert!(matches!(masked, std::borrow::Cow::Borrowed(_)));
    assert!(findings.is_empty());
}

#[test]
fn hmac_tokens_correlate_equal_values() {
    let config = MaskingConfig {
        replacement: Replacement::Hmac,
        hmac_key: Some("0123456789abcdef0123".into()),
        ..MaskingConfig::default()
    };
    let masker = Masker::new(&config).unwrap();
    let (a, _) = masker.mask_text("4111 1111 1111 1111");
    let (b, _) = masker.mask_text("4111-1111-1111-1111");
    let (c, _) = masker.mask_text("5500 0000 0000 0004");
    assert!(a.starts_with("[HMAC:CREDIT_CARD:") && a.len() == "[HMAC:CREDIT_CARD:]".len() + 10);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn partial_keeps_the_last_four() {
    let config = MaskingConfig {
        replacement: Replacement::Partial,
        ..MaskingConfig::default()
    };
    let (masked, _) = Masker::new(&config)
        .unwrap()
        .mask_text("pay 4111 1111 1111 1234?");
    // 4111111111111234 is not Luhn-valid; use a valid one.
    assert_eq!(masked, "pay 4111 1111 1111 1234?");
    let (masked, _) = Masker::new(&config)
        .unwrap()
        .mask_text("pay 4111 1111 1111 1111.");
    assert_eq!(masked, "pay [REDACTED:CREDIT_CARD:...1111].");
}

#[test]
fn the_configured_threshold_decides() {
    let at = |threshold: f32| {
        let masker = Masker::new(&MaskingConfig {
            threshold,
            ..MaskingConfig::default()
        })
        .unwrap();
        // Confidences: bare nine digits 0.35, spaced SSN 0.6, dashed SSN 0.85.
        let (masked, _) = masker.mask_text("ids 123456789; 123 45 6789; 123-45-6789");
        masked.into_owned()
    };
    assert_eq!(
        at(0.3),
        "ids [REDACTED:US_SSN]; [REDACTED:US_SSN]; [REDACTED:US_SSN]"
    );
    assert_eq!(
        at(0.5),
        "ids 123456789; [REDACTED:US_SSN]; [REDACTED:US_SSN]"
    );
    assert_eq!(at(0.7), "ids 123456789; 123 45 6789; [REDACTED:US_SSN]");
    assert_eq!(at(0.9), "ids 123456789; 123 45 6789; 123-45-6789");
}

#[test]
fn cards_next_to_expiry_cvv_or_item_numbers_are_masked() {
    for (text, expected) in [
        (
            "card 4111 1111 1111 1111 12/26",
            "card [REDACTED:CREDIT_CARD] 12/26",
        ),
        ("4111 1111 1111 1111 123", "[REDACTED:CREDIT_CARD] 123"),
        (
            "item 3 4111 1111 1111 1111",
            "item 3 [REDACTED:CREDIT_CARD]",
        ),
        // Regression: each card sat next to a group of four digits, so both were refused.
        (
            "cards 4111 1111 1111 1111 5500 0000 0000 0004",
            "cards [REDACTED:CREDIT_CARD] [REDACTED:CREDIT_CARD]",
        ),
        // A reference grouped in fours is not a card, wherever a Luhn-valid run sits in it.
        (
            "ref 4111 1111 1111 1111 2026",
            "ref 4111 1111 1111 1111 2026",
        ),
    ] {
        assert_eq!(masker().mask_text(text).0, expected);
    }
}

#[test]
fn short_ipv6_lookalikes_need_a_context_word() {
    for text in ["x :: Int", "use a::b here", "dead::beef", "::"] {
        let (masked, findings) = masker().mask_text(text);
        assert_eq!(masked, text);
        assert!(findings.is_empty(), "{text}: {findings:?}");
    }
    let (masked, _) = masker().mask_text("client ip fe80::1");
    assert_eq!(masked, "client ip [REDACTED:IP_ADDRESS]");
    let (masked, _) = masker().mask_text("from 2001:db8::8a2e:370:7334");
    assert_eq!(masked, "from [REDACTED:IP_ADDRESS]");
}

// Regression (issue 14): UK trunk-prefix numbers were missed in free text, and North
// American numbers whose exchange starts with 0 or 1 even under a `phone` key.
#[test]
fn phones_in_national_formats_are_found() {
    let masker = masker();
    for text in [
        "call 020 7946 0018 today",
        "office (020) 7946 0018",
        "mobile 07700 900123",
        "tel. 02079460018",
        "see 020 7946 0018",
        "see (020) 7946 0018",
        "see (555) 012-3456",
        "see 0161 496 0000",
        "see 04 15 39 15 00",
        "see 030 12345678",
        "see 98765 43210",
        "see 612 34 56 78",
        "see 0412 345 678",
        "see +44 (0)20 7946 0018",
        "see 0044 20 7946 0018",
        "see 212-555-0123 x1234",
    ] {
        let (masked, findings) = masker.mask_text(text);
        assert!(
            !masked.bytes().any(|b| b.is_ascii_digit()),
            "{text} -> {masked}"
        );
        assert_eq!(findings, [finding("PHONE", "", 1)], "{text}");
    }
    for key in [
        "phone",
        "mobile",
        "tel",
        "telephone",
        "phone_number",
        "fax",
        "workPhone",
    ] {
        for value in [
            "(555) 012-3456",
            "555-012-3456",
            "5550123456",
            "4177 7631",
            "02079460018",
        ] {
            let mut doc = json!({ key: value });
            let findings = masker
                .mask_json(&mut doc, &FieldRules::empty(), true)
                .unwrap();
            assert_eq!(doc, json!({ key: "[REDACTED:PHONE]" }), "{key}: {value}");
            assert_eq!(findings, [finding("PHONE", &format!("/{key}"), 1)]);
        }
    }
}

#[test]
fn phone_near_misses_stay() {
    let masker = masker();
    for text in [
        "order ORD-20240115-000123 shipped",
        "created 2024-01-15 10:30:00",
        "on 15.01.2024 and 01/15/2024",
        "total 1 234 567 EUR",
        "amount 233 516 020",
        "ts 1705312200123",
        "isbn 978-3-16-148410-0",
        "version 10.2.33.4",
        "INV-2024-000123",
        "ref 2024 0115 0001",
        "iban NL78 BLLE 0311 0803 44 (check digits wrong)",
    ] {
        let (masked, findings) = masker.mask_text(text);
        assert_eq!(masked, text);
        assert!(findings.is_empty(), "{text}: {findings:?}");
    }
    // Under a key that is not about phones, a bare number is not a phone number.
    let mut doc = json!({"telemetry_id": "5550123456", "order_id": "02079460018"});
    let findings = masker
        .mask_json(&mut doc, &FieldRules::empty(), true)
        .unwrap();
    assert!(findings.is_empty(), "{findings:?}");
}
