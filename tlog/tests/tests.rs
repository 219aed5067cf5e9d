//! Integration tests of `callproof-tlog`, one binary with topic modules.

mod audit;
mod bundle;
mod cli;
mod deps;
mod golden;
mod hostile;
mod proofs;
mod support;
mod vectors;
mod writer;
