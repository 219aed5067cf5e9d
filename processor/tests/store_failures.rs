//! Object-store write failures are retried: never a gap, never a corrupt log.

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rand::{Rng, SeedableRng};

use crate::support::events::call_event;
use crate::support::{Deployment, assert_exactly_once, produce, producer};

/// A decorator that fails some writes under `logs/` and `blobs/`: some before the write
/// (nothing stored), some after it (stored, but the caller is told it failed).
#[derive(Debug)]
struct FlakyStore {
    inner: Arc<dyn ObjectStore>,
    rng: Mutex<rand::rngs::StdRng>,
    failures: AtomicU64,
    /// Refuse create-only and conditional writes, as a store without them does.
    without_conditional_writes: bool,
}

impl fmt::Display for FlakyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FlakyStore({})", self.inner)
    }
}

enum Fault {
    None,
    Before,
    After,
}

impl FlakyStore {
    fn fault(&self, location: &Path) -> Fault {
        let path = location.as_ref();
        if !(path.starts_with("logs/") || path.starts_with("blobs/")) {
            return Fault::None;
        }
        let roll: f64 = self.rng.lock().map(|mut rng| rng.r#gen()).unwrap_or(1.0);
        if roll < 0.08 {
            Fault::Before
        } else if roll < 0.12 {
            Fault::After
        } else {
            Fault::None
        }
    }

    fn error(&self, location: &Path) -> object_store::Error {
        self.failures.fetch_add(1, Ordering::Relaxed);
        object_store::Error::Generic {
            store: "flaky",
            source: format!("injected failure writing {location}").into(),
        }
    }
}

#[async_trait]
impl ObjectStore for FlakyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.without_conditional_writes && opts.mode != object_store::PutMode::Overwrite {
            return Err(object_store::Error::NotImplemented);
        }
        match self.fault(location) {
            Fault::Before => Err(self.error(location)),
            Fault::After => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(self.error(location))
            }
            Fault::None => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    async fn delete(&self, location: &Path) -> object_store::Result<()> {
        self.inner.delete(location).await
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Path, to: &Path) -> object_store::Result<()> {
        self.inner.copy_if_not_exists(from, to).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_retried_without_gaps_or_corruption() {
    const N_EVENTS: usize = 1_500;
    let deployment = Deployment::new(3).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut events: Vec<_> = (0..N_EVENTS as u64)
        .map(|sequence| call_event(&mut rng, sequence, 300))
        .collect();
    // A few large bodies, so blob writes fail too.
    for event in events.iter_mut().step_by(250) {
        if let Some(body) = event
            .response
            .as_mut()
            .and_then(|response| response.body.as_mut())
        {
            *body = format!("\"{}\"", "z".repeat(80_000));
        }
    }
    let ids: Vec<String> = events.iter().map(|event| event.event_id.clone()).collect();
    produce(&producer(), &deployment.topic, &events).await;

    let flaky = Arc::new(FlakyStore {
        inner: deployment.store(),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(99)),
        failures: AtomicU64::new(0),
        without_conditional_writes: false,
    });
    let pipeline = callproof_processor::build(deployment.config(""), Some(flaky.clone()))
        .await
        .expect("build");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(pipeline.run(async {
        let _ = stopped.await;
    }));
    deployment
        .wait_for_logged(N_EVENTS as u64, Duration::from_secs(120))
        .await;
    // The indexer in the processor reads the log through the same failing store.
    deployment
        .wait_for_indexed(N_EVENTS, Duration::from_secs(120))
        .await;
    let _ = stop.send(());
    running.await.expect("join").expect("pipeline");

    assert!(
        flaky.failures.load(Ordering::Relaxed) > 20,
        "too few injected failures"
    );
    let logs = deployment.read_logs().await;
    assert_exactly_once(&logs, &ids);
    deployment.audit_all();
    assert_eq!(deployment.search("*").len(), N_EVENTS);
}

/// A store without conditional writes cannot fence the single writer of a log: the processor
/// refuses it at start and says why, rather than run unfenced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_without_conditional_writes_is_refused_at_start() {
    let deployment = Deployment::new(1).await;
    let store = Arc::new(FlakyStore {
        inner: deployment.store(),
        rng: Mutex::new(rand::rngs::StdRng::seed_from_u64(1)),
        failures: AtomicU64::new(0),
        without_conditional_writes: true,
    });
    let error = match callproof_processor::build(deployment.config(""), Some(store)).await {
        Ok(_) => panic!("a store without conditional writes was accepted"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("not writable") && error.contains("only if it is absent"),
        "{error}"
    );
    assert!(deployment.read_logs().await.is_empty(), "a log was started");
}
