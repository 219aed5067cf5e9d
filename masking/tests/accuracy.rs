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
