//! Integration tests of `callproof-masking`, one module per topic. The allocation test lives
//! in its own binary (`tests/alloc.rs`) because it installs a global allocator.

mod accuracy;
mod api;
mod cli;
mod corpus;
mod robustness;
