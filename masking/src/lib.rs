//! Masking engine (under construction).
