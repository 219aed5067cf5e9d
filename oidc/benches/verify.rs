//! Authenticating a caller, as the gateway does on every call: a token seen for the first time
//! (`cold`: decode, key lookup, signature and claims, then kept in the cache) against the same
//! token again (`cached`: the digest, the cache, the key and clock checks, a copy of the
//! principal). Both go through `Authenticator::authenticate` against a local issuer, in the same
//! run, so their ratio is what the cache buys.
//!
//! First run (2 cores shared with other builds): `eddsa/cold` 68.3 us, `eddsa/cached` 1.34 us
//! (51x); `es256/cold` 439 us, `es256/cached` 1.30 us (338x). The cached figure includes a
//! `block_on` per call; of it, the cache's mutex is held for one hash-map probe, which is why a
//! concurrent cache crate was not worth a dependency. In the gateway under wrk at 16 connections,
//! `perf` puts all of `callproof_oidc` at 0.4% of the gateway's CPU, down from about 7% when every
//! call verified its token.
//!
//! `cargo bench -p callproof-oidc --bench verify`.

use std::hint::black_box;

use callproof_config::OidcConfig;
use callproof_oidc::Authenticator;
use callproof_tests::issuer::{AUDIENCE, TestIssuer, sign};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use jsonwebtoken::Algorithm;

fn verify(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let issuer = runtime
        .block_on(TestIssuer::start())
        .expect("the test issuer");
    let authenticator = Authenticator::new(OidcConfig {
        issuer: issuer.url.clone(),
        audiences: vec![AUDIENCE.to_string()],
        groups_claim: "groups".to_string(),
        algorithms: ["RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
        clock_skew_secs: 30,
        jwks_cache_secs: 3_600,
        jwks_min_refresh_secs: 10,
        http_timeout_ms: 2_000,
    })
    .expect("an authenticator");
    runtime.block_on(authenticator.warm_up());

    let mut group = c.benchmark_group("authenticate");
    for (name, algorithm) in [("eddsa", Algorithm::EdDSA), ("es256", Algorithm::ES256)] {
        let key = issuer.key(algorithm);
        // Each claim set has its own `jti`, so every fresh token is a miss.
        let fresh = || sign(&key, &issuer.claims("alice", &["staff", "support", "eu"]));
        let token = fresh();
        runtime
            .block_on(authenticator.authenticate(&token))
            .expect("the token verifies");
        group.bench_function(format!("{name}/cold"), |b| {
            b.iter_batched(
                fresh,
                |token| runtime.block_on(authenticator.authenticate(black_box(&token))),
                BatchSize::SmallInput,
            )
        });
        group.bench_function(format!("{name}/cached"), |b| {
            b.iter(|| runtime.block_on(authenticator.authenticate(black_box(&token))))
        });
    }
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
