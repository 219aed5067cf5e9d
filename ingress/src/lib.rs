//! Ingress.
