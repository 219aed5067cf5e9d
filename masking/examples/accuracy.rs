//! Prints the accuracy and phone tables of README.md:
//! `cargo run -p callproof-masking --example accuracy`.

#[path = "../tests/corpus.rs"]
mod corpus;

use callproof_masking::{Masker, MaskingConfig};

fn main() {
    let records = corpus::generate(corpus::SEED, corpus::N_RECORDS);
    let masker = Masker::new(&MaskingConfig::default()).expect("default config is valid");
    println!("{} records (seed {:#x})\n", records.len(), corpus::SEED);
    println!("{}", corpus::evaluate(&masker, &records));
    println!("{}", corpus::evaluate_phones(&masker));
}
