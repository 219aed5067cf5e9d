//! Integration tests of `callproof-masking`, one module per topic.

mod api;
