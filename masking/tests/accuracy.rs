//! Accuracy on the generated labelled corpus (see `corpus.rs`); the table printed here is
//! the one in `masking/README.md` (`cargo test -p callproof-masking --test tests accuracy -- --nocapture`).

use callproof_masking::{Masker, MaskingConfig};

use crate::corpus::{self, N_RECORDS, SEED};

/// Detectors whose matches are checked by a checksum or a strict rule set.
const VALIDATED: [&str; 3] = ["CREDIT_CARD", "IBAN", "US_SSN"];

#[test]
fn recall_and_precision_on_the_labelled_corpus() {
    let records = corpus::generate(SEED, N_RECORDS);
    assert!(records.len() >= 5000);
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let scores = corpus::evaluate(&masker, &records);
    println!("{scores}");
    // `recall` is 1.0 on zero labels: make sure every detector was actually tested.
    for detector in callproof_masking::BUILTIN_DETECTORS {
        let n_labelled = scores.labelled(detector);
        assert!(
            n_labelled >= 100,
            "{detector}: only {n_labelled} labelled values"
        );
    }
    for detector in VALIDATED {
        let recall = scores.recall(detector);
        assert!(recall >= 0.99, "{detector} recall {recall:.4} < 0.99");
    }
    let (tp, fp, _) = scores.totals();
    let precision = tp as f64 / (tp + fp) as f64;
    assert!(precision >= 0.98, "overall precision {precision:.4} < 0.98");
    assert!(
        scores.leaks * 100 <= scores.n_labelled,
        "{} labelled values leaked",
        scores.leaks
    );
}

#[test]
fn corpus_is_deterministic() {
    let a = corpus::generate(SEED, 50);
    let b = corpus::generate(SEED, 50);
    assert!(
        a.iter()
            .zip(&b)
            .all(|(a, b)| a.expected == b.expected && a.secrets == b.secrets)
    );
}

/// Recall on the Faker phone corpus (`tests/phones/`): every number under a phone-like key,
/// all but Faker's few `000…` values (no country's plan has them) after a context word, and,
/// bare in free text with nothing saying "phone", at least the floor measured for each
/// locale (README.md explains what is left: bare digits, thousands-shaped groups, local
/// numbers without area code, numbers no plan knows). Every near miss stays as it was.
#[test]
fn phones_as_faker_writes_them_and_near_misses() {
    const BARE_FLOORS: [(&str, f64); 11] = [
        ("de_DE", 0.75),
        ("en_AU", 0.75),
        ("en_CA", 0.85),
        ("en_GB", 0.90),
        ("en_IN", 0.30),
        ("en_US", 0.85),
        ("es_ES", 1.0),
        ("fr_FR", 0.75),
        ("it_IT", 0.45),
        ("nl_NL", 0.90),
        ("pl_PL", 0.55),
    ];
    let masker = Masker::new(&MaskingConfig::default()).unwrap();
    let scores = corpus::evaluate_phones(&masker);
    println!("{scores}");
    for miss in &scores.misses {
        println!("  {miss}");
    }
    assert_eq!(scores.by_locale.len(), BARE_FLOORS.len());
    for (locale, floor) in BARE_FLOORS {
        let under_key = scores.recall(Some(locale), 1);
        assert_eq!(
            under_key, 1.0,
            "{locale}: recall under a phone key {under_key:.3}"
        );
        let with_word = scores.recall(Some(locale), 2);
        assert!(
            with_word >= 0.99,
            "{locale}: recall after a context word {with_word:.3}"
        );
        let bare = scores.recall(Some(locale), 3);
        assert!(
            bare >= floor,
            "{locale}: recall bare in text {bare:.3} < {floor}"
        );
    }
    let [n_near_misses, left_in_text, left_under_keys] = scores.near_misses;
    assert!(n_near_misses >= 600);
    assert_eq!(left_in_text, n_near_misses, "near misses masked in text");
    assert_eq!(
        left_under_keys, n_near_misses,
        "near misses masked under keys"
    );
}
