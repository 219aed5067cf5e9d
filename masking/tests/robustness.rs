//! Idempotence in every replacement mode, and hostile input: deep and huge documents,
//! invalid UTF-8, expensive custom patterns.

use std::time::{Duration, Instant};

use callproof_masking::{
    CustomDetector, FieldRules, Masker, MaskingConfig, MaskingError, Replacement,
};
use serde_json::{Value, json};

use crate::corpus::{self, Payload};

fn config(replacement: Replacement) -> MaskingConfig {
    MaskingConfig {
        replacement,
        hmac_key: Some("an hmac key of at least 16 bytes".into()),
        scan_keys: true,
        ..MaskingConfig::default()
    }
}

#[test]
fn masking_masked_output_changes_nothing_in_every_mode() {
    let records = corpus::generate(7, 1500);
    let rules = FieldRules::parse(&["/args/ssn_0", "call_id"]).unwrap();
    for replacement in [Replacement::Redact, Replacement::Partial, Replacement::Hmac] {
        let masker = Masker::new(&config(replacement)).unwrap();
        for record in &records {
            match &record.payload {
                Payload::Json(doc) => {
                    let mut once = doc.clone();
                    masker.mask_json(&mut once, &rules, true).unwrap();
                    let mut twice = once.clone();
                    let findings = masker.mask_json(&mut twice, &rules, true).unwrap();
                    assert_eq!(once, twice, "{replacement:?}");
                    assert!(findings.is_empty(), "{replacement:?}: {findings:?}");
                }
                Payload::Text(text) => {
                    let (once, _) = masker.mask_text(text);
                    let (twice, findings) = masker.mask_text(&once);
                    assert_eq!(once, twice, "{replacement:?}");
                    assert!(findings.is_empty(), "{replacement:?}: {findings:?}");
                }
            }
        }
    }
}

// Replacing the card un-glued the phone number after it, which a second pass then masked.
#[test]
fn masking_is_a_fixpoint_when_a_replacement_unglues_a_neighbour() {
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let (once, _) = masker.mask_text("4111111111111111-212-555-0123");
    let (twice, findings) = masker.mask_text(&once);
    assert_eq!(once, twice);
    assert!(findings.is_empty());
}

/// A phone-shaped value under a key with multi-byte characters once panicked (the key was
/// split inside a character): it is masked like any other.
#[test]
fn keys_with_multi_byte_characters_are_masked_without_a_panic() {
    let masker = Masker::new(&config(Replacement::Redact)).unwrap();
    let mut document = json!({
        "téléphone": "01 23 45 67 89",
        "電話": "03-1234-5678",
        "número_de_teléfono": "+34 612 345 678",
    });
    masker
        .mask_json(&mut document, &FieldRules::default(), true)
        .unwrap();
    let text = document.to_string();
    for number in ["01 23 45 67 89", "612 345 678"] {
        assert!(!text.contains(number), "{number} left in {text}");
    }
}

#[test]
fn deep_documents_are_an_error_not_a_stack_overflow() {
    let mut doc = json!("4111 1111 1111 1111");
    for _ in 0..2000 {
        doc = Value::Array(vec![doc]);
    }
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let error = masker
        .mask_json(&mut doc, &FieldRules::empty(), true)
        .unwrap_err();
    assert!(matches!(error, MaskingError::TooDeep { max_depth: 128 }));
    assert_eq!(
        error.to_string(),
        "document nests deeper than `masking.max_depth` (128)"
    );
    // Dropping a 2000-deep value recurses in serde_json; unwind it here iteratively.
    while let Value::Array(mut items) = doc {
        doc = items.pop().unwrap_or(Value::Null);
    }
}

#[test]
fn huge_documents_take_linear_time() {
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let line = "order ORD-12345678 for ann@example.com at 2024-01-15T10:30:00Z; ";
    let text = line.repeat(4 * 1024 * 1024 / line.len());
    let started = Instant::now();
    let (masked, findings) = masker.mask_text(&text);
    assert_eq!(findings[0].count as usize, text.len() / line.len());
    assert!(!masked.contains("ann@"));
    // Generous even for a debug build on a loaded machine; quadratic behaviour would take hours.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn invalid_utf8_is_an_error_naming_the_offset() {
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let error = masker.mask_bytes(b"ann@example.com \xff\xfe").unwrap_err();
    assert!(matches!(error, MaskingError::InvalidUtf8 { offset: 16 }));
    assert!(!error.to_string().contains("ann"));
    let (masked, _) = masker.mask_bytes(b"ann@example.com").unwrap();
    assert_eq!(masked, "[REDACTED:EMAIL]");
}

fn custom(pattern: &str) -> MaskingConfig {
    MaskingConfig {
        custom: vec![CustomDetector {
            name: "CUSTOM".into(),
            pattern: pattern.into(),
            validator: None,
            context: vec![],
            negative_context: vec![],
            confidence: 0.8,
        }],
        ..MaskingConfig::default()
    }
}

#[test]
fn regex_bombs_are_rejected_at_load_with_a_reason() {
    for (pattern, reason) in [
        ("(a{1000}){1000}", "size limit"),
        (
            "((((((((((a{100}){100}){100}){100}){100}){100}){100}){100}){100}){100})",
            "size limit",
        ),
        (&format!("{}a{}", "(".repeat(500), ")".repeat(500)), "nest"),
        ("a*", "empty string"),
        ("[", "unclosed"),
    ] {
        let error = Masker::new(&custom(pattern)).err().expect(pattern);
        let message = error.to_string();
        assert!(message.starts_with("custom detector `CUSTOM`"), "{message}");
        assert!(message.contains(reason), "{pattern}: {message}");
    }
}

#[test]
fn backtracking_shaped_patterns_stay_linear() {
    // Catastrophic in a backtracking engine; the `regex` crate is linear.
    let masker = Masker::new(&custom("(a|aa)+(b|c)")).unwrap();
    let text = "a".repeat(1 << 20);
    let started = Instant::now();
    let (masked, findings) = masker.mask_text(&text);
    assert!(findings.is_empty() && masked.len() == text.len());
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn config_errors_name_the_key() {
    let cases = [
        (
            "detectors = [\"CREDIT_CARD\", \"PASSPORT\"]",
            "unknown detector `PASSPORT` in `masking.detectors`",
        ),
        (
            "replacement = \"hmac\"",
            "`masking.hmac_key` must be set, at least 16 bytes, when a detector uses `hmac` replacement",
        ),
        (
            "threshold = 1.5",
            "`masking.threshold` must be between 0.0 and 1.0",
        ),
        (
            "detector_replacement = { CARD = \"partial\" }",
            "unknown detector `CARD` in `masking.detector_replacement`",
        ),
        (
            "[[custom]]\nname = \"EMAIL\"\npattern = 'x'",
            "custom detector `EMAIL`: name is taken by a built-in detector",
        ),
    ];
    for (toml_text, expected) in cases {
        let config: MaskingConfig = toml::from_str(toml_text).unwrap();
        let error = Masker::new(&config).err().expect(toml_text);
        assert_eq!(error.to_string(), expected);
    }
    let unknown_key = toml::from_str::<MaskingConfig>("treshold = 0.4").unwrap_err();
    assert!(unknown_key.to_string().contains("unknown field `treshold`"));
}

#[test]
fn debug_output_never_shows_the_hmac_key() {
    let config = config(Replacement::Hmac);
    assert!(!format!("{config:?}").contains("16 bytes"));
}

#[test]
fn custom_detectors_with_validators_and_context() {
    let config: MaskingConfig = toml::from_str(
        r#"
        [[custom]]
        name = "EMPLOYEE_ID"
        pattern = 'EMP-[0-9]{6}'
        [[custom]]
        name = "IMEI"
        pattern = '\b[0-9]{15}\b'
        validator = "luhn"
        context = ["imei"]
        confidence = 0.4
        "#,
    )
    .unwrap();
    let masker = Masker::new(&config).unwrap();
    let (masked, _) = masker.mask_text("EMP-123456, imei 490154203237518, other 490154203237518");
    assert_eq!(
        masked,
        "[REDACTED:EMPLOYEE_ID], imei [REDACTED:IMEI], other 490154203237518"
    );
    let (masked, _) = masker.mask_text("imei 490154203237519");
    assert_eq!(masked, "imei 490154203237519");
}

// Regression: anything shaped like `[WORD:WORD:alnum]` passed as one of our tokens, and the
// card, IBAN, SSN or key inside it was never looked at.
#[test]
fn spoofed_tokens_do_not_hide_values() {
    let spoofs = [
        (
            "[HMAC:X:4111111111111111]",
            "4111111111111111",
            "CREDIT_CARD",
        ),
        (
            "[REDACTED:A:DE89370400440532013000]",
            "DE89370400440532013000",
            "IBAN",
        ),
        ("ssn [REDACTED:US_SSN:123456789]", "123456789", "US_SSN"),
        (
            "[HMAC:AWS_ACCESS_KEY:AKIAIOSFODNN7EXAMPLE]",
            "AKIAIOSFODNN7EXAMPLE",
            "AWS_ACCESS_KEY",
        ),
        (
            "[REDACTED:CREDIT_CARD:...4111111111111111]",
            "4111111111111111",
            "CREDIT_CARD",
        ),
        // Our own detector names, but not the form this configuration writes.
        (
            "[HMAC:CREDIT_CARD:4111111111111111]",
            "4111111111111111",
            "CREDIT_CARD",
        ),
        (
            "[REDACTED:FIELD:5500000000000004]",
            "5500000000000004",
            "CREDIT_CARD",
        ),
    ];
    for replacement in [Replacement::Redact, Replacement::Partial, Replacement::Hmac] {
        let masker = Masker::new(&config(replacement)).unwrap();
        for (spoof, value, detector) in spoofs {
            let (masked, findings) = masker.mask_text(spoof);
            assert!(
                !masked.contains(value),
                "{replacement:?}: {spoof} -> {masked}"
            );
            assert!(
                findings.iter().any(|f| f.detector == detector),
                "{replacement:?}: {spoof}: {findings:?}"
            );
            let (again, findings) = masker.mask_text(&masked);
            assert_eq!(again, masked, "{replacement:?}");
            assert!(findings.is_empty(), "{replacement:?}: {findings:?}");
        }
    }
}

#[test]
fn only_the_exact_tokens_of_this_configuration_are_trusted() {
    let masker = Masker::new(&config(Replacement::Hmac)).unwrap();
    let (token, _) = masker.mask_text("4111 1111 1111 1111");
    assert!(token.starts_with("[HMAC:CREDIT_CARD:"), "{token}");
    // A token of the right shape is left alone...
    let (same, findings) = masker.mask_text(&token);
    assert_eq!(same, token);
    assert!(findings.is_empty());
    // ...one hex digit more or upper-case hex is not ours, and what it holds is scanned.
    let (masked, findings) = masker.mask_text("[HMAC:CREDIT_CARD:4111111111111111]");
    assert_eq!(findings.len(), 1, "{masked}");
    // A value next to a genuine token is still found.
    let glued = format!("{token}4111-1111-1111-1111");
    let (masked, _) = masker.mask_text(&glued);
    assert!(!masked.contains("4111-1111"), "{masked}");
}

// Regression: with `hmac_token_len` equal to a value's length, `[HMAC:PHONE:2125550123]` had
// exactly the shape of a token this engine writes (ten lowercase hex digits) and the phone
// number inside it passed unmasked. A genuine digest now always holds a hex letter.
#[test]
fn digits_in_a_token_shaped_wrapper_are_masked() {
    let spoofs = [
        ("[HMAC:PHONE:2125550123]", 10, "2125550123", "PHONE"),
        ("[HMAC:PHONE:+44 20 7946 0018]", 10, "7946", "PHONE"),
        ("[HMAC:PHONE:02079460018]", 11, "02079460018", "PHONE"),
        ("[HMAC:US_SSN:123456789]", 9, "123456789", "US_SSN"),
        (
            "[HMAC:CREDIT_CARD:4111111111111111]",
            16,
            "4111111111111111",
            "CREDIT_CARD",
        ),
    ];
    for (spoof, hmac_token_len, value, detector) in spoofs {
        let masker = Masker::new(&MaskingConfig {
            hmac_token_len: hmac_token_len.max(8),
            ..config(Replacement::Hmac)
        })
        .unwrap();
        let (masked, findings) = masker.mask_text(spoof);
        assert!(!masked.contains(value), "{spoof} -> {masked}");
        assert!(
            findings.iter().any(|f| f.detector == detector),
            "{spoof}: {findings:?}"
        );
        let (again, findings) = masker.mask_text(&masked);
        assert_eq!(again, masked);
        assert!(findings.is_empty(), "{findings:?}");
    }
}

/// Every HMAC token holds a hex letter, so none reads as digits, and masking stays
/// idempotent for the values whose first digest was all decimal digits (about 2 in 100 at
/// eight hex digits, so a few dozen of these 2,000).
#[test]
fn hmac_tokens_always_hold_a_hex_letter() {
    let masker = Masker::new(&MaskingConfig {
        hmac_token_len: 8,
        ..config(Replacement::Hmac)
    })
    .unwrap();
    for n in 0..2000 {
        let text = format!("call +1 212 555 {n:04}");
        let (masked, _) = masker.mask_text(&text);
        let digest = &masked[masked.rfind(':').unwrap() + 1..masked.len() - 1];
        assert_eq!(digest.len(), 8, "{masked}");
        assert!(digest.bytes().any(|b| b.is_ascii_alphabetic()), "{masked}");
        let (again, findings) = masker.mask_text(&masked);
        assert_eq!(again, masked);
        assert!(findings.is_empty());
    }
}
