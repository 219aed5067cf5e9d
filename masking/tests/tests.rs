//! Integration tests of `callproof-masking`, one module per topic.

mod accuracy;
mod api;
mod corpus;
