//! The pipeline: consume a batch, then Decoder → Masker → SiemPublisher → LogAppender, then
//! commit the consumer offsets. The search index is not built here: the indexer
//! (`callproof-indexer`, run for the partitions this processor owns when `index.in_process`)
//! follows each partition's log on its own tasks, so anchoring never waits for it.
//!
//! Batches are processed one at a time, and the consumer is polled only between them. That is
//! what makes partition revocation clean: rebalance callbacks run inside `recv()`, so when a
//! partition is revoked no append for it is in flight, and the messages of it already
//! collected are dropped before its new owner opens the log. Consumption still overlaps with
//! processing, because librdkafka prefetches on its own threads, and the CPU-heavy stages
//! (decode, mask, encode) run on every core through `spawn_blocking`.
//!
//! Exactly once: a partition's log checkpoint records the next Kafka offset; on opening a
//! partition the processor skips messages below it (and seeks back if the group's committed
//! offset is ahead of it), so the log never misses or repeats a message. The group commit
//! follows the checkpoint and is only an optimisation for where fetching starts.
//!
//! One writer per log: the group protocol assigns a partition to one instance, and the store
//! enforces it (`callproof_tlog::store`). An append fenced by another writer drops the rest of
//! the batch for that partition and reopens its log; the next batch lines up with the log as
//! the other writer left it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callproof_config::Config;
use callproof_tlog::note::NoteSigner;
use callproof_tlog::store::LogReader;
use object_store::ObjectStore;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::Message as _;
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use serde_json::json;
use sha2::{Digest as _, Sha256};

use crate::ProcessorError;
use crate::decoder::{Decoded, Decoder, RawMessage};
use crate::log_appender::{APPEND_RETRY_LIMIT, LogAppender, log_prefix};
use crate::masker::Masker;
use crate::sequencer::Sequencer;
use crate::siem::{LogPosition, PublishReport, SiemPublisher, SiemRecord};
use callproof_evidence_format::entry::{
    EncodedEntry, EntrySource, MAX_ENTRY_BYTES, canonical_json, encode_entry, event_entry_bytes,
};

/// Partitions assigned or revoked, as reported by the rebalance callbacks.
#[derive(Debug)]
enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

/// Records rebalances for the pipeline loop; runs inside `recv()`.
#[derive(Default)]
pub struct RebalanceContext {
    topic: String,
    events: Mutex<Vec<RebalanceEvent>>,
}

impl ClientContext for RebalanceContext {
    /// librdkafka's statistics (every 5 s) carry each partition's lag behind the high
    /// watermark, measured from the committed offset, which follows the log checkpoints.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let Some(topic) = statistics.topics.get(&self.topic) else {
            return;
        };
        for (partition, stats) in &topic.partitions {
            if *partition >= 0 && stats.consumer_lag >= 0 {
                metrics::gauge!("callproof_processor_consumer_lag_messages", "partition" => partition.to_string())
                    .set(stats.consumer_lag as f64);
            }
        }
    }
}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(list) = rebalance {
            self.push(RebalanceEvent::Revoked(self.partitions_of(list)));
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(list) = rebalance {
            self.push(RebalanceEvent::Assigned(self.partitions_of(list)));
        }
    }
}

impl RebalanceContext {
    fn partitions_of(&self, list: &TopicPartitionList) -> Vec<i32> {
        list.elements()
            .iter()
            .filter(|element| element.topic() == self.topic)
            .map(|element| element.partition())
            .collect()
    }

    fn push(&self, event: RebalanceEvent) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event);
        }
    }

    fn take(&self) -> Vec<RebalanceEvent> {
        self.events
            .lock()
            .map(|mut events| std::mem::take(&mut *events))
            .unwrap_or_default()
    }
}

/// What the pipeline needs besides the consumer: built once at start.
pub struct Stages {
    pub config: Config,
    pub store: Arc<dyn ObjectStore>,
    pub signer: NoteSigner,
    /// Origin prefix; partition `p`'s log is `<origin>/<p>`.
    pub origin: String,
    pub masker: Arc<Masker>,
    pub siem: SiemPublisher,
}

struct PartitionState {
    appender: LogAppender,
    /// Numbers the partition's calls' events in log order.
    sequencer: Sequencer,
    /// Whether the position of a new log was checked against the partition's beginning.
    position_checked: bool,
    /// The offset missing after a gap and how many seeks back were made for it, until a
    /// message at it arrives: a gap that stays after reading from the beginning means the
    /// broker no longer has those messages.
    gap_seek: Option<(i64, u8)>,
}

/// A partition's messages of one batch, lined up with its log.
#[derive(Debug)]
struct LinedUp {
    /// Consecutive messages starting at the log's next offset (or anywhere, for a log that
    /// has recorded none yet).
    kept: Vec<RawMessage>,
    /// Messages below the next offset, already in the log (redelivered): skipped.
    repeated: usize,
    /// A missing offset: the messages from it on are dropped, to be fetched again.
    gap: Option<OffsetGap>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OffsetGap {
    expected: i64,
    found: i64,
}

/// Keeps the messages that continue the log without a gap or a repeat, in offset order.
fn line_up(next_offset: Option<i64>, messages: Vec<RawMessage>) -> LinedUp {
    let mut expected = next_offset;
    let mut lined = LinedUp {
        kept: Vec::with_capacity(messages.len()),
        repeated: 0,
        gap: None,
    };
    for message in messages {
        let offset = message.source.offset;
        match expected {
            Some(expected) if offset < expected => {
                lined.repeated += 1;
                continue;
            }
            Some(expected) if offset > expected => {
                lined.gap = Some(OffsetGap {
                    expected,
                    found: offset,
                });
                break;
            }
            _ => {}
        }
        expected = Some(offset + 1);
        lined.kept.push(message);
    }
    lined
}

/// Messages prepared at a time within a batch: the next chunk is prepared while the one before
/// it is published and appended.
const PIPELINE_CHUNK_EVENTS: usize = 2048;

/// The running pipeline.
pub struct Pipeline {
    stages: Arc<Stages>,
    consumer: StreamConsumer<RebalanceContext>,
    topic: String,
    partitions: HashMap<i32, PartitionState>,
    /// Partitions whose append was fenced during the batch in hand (another writer appended to
    /// their log first): the rest of the batch for them is dropped.
    fenced_in_batch: HashSet<i32>,
    /// The indexers of the partitions this processor owns (`index.in_process`).
    indexers: Option<callproof_indexer::Indexers>,
}

/// One message to prepare: its place in the log and its number in its call.
struct Work {
    message: RawMessage,
    log_index: u64,
    /// The event's `seq` in the log (`None` when the message is not an event).
    seq: Option<i32>,
}

/// One message, processed up to the append.
struct Prepared {
    partition: i32,
    /// The message's Kafka offset.
    offset: i64,
    entry: EncodedEntry,
    siem: SiemRecord,
    timestamp_ms: Option<i64>,
}

impl Pipeline {
    /// Creates the consumer and subscribes to the calls topic.
    pub fn new(stages: Stages) -> Result<Pipeline, ProcessorError> {
        let config = &stages.config;
        let topic = config.kafka.calls_topic.clone();
        let context = RebalanceContext {
            topic: topic.clone(),
            events: Mutex::new(Vec::new()),
        };
        let consumer: StreamConsumer<RebalanceContext> =
            consumer_config(config).create_with_context(context)?;
        consumer.subscribe(&[&topic])?;
        let indexers = config.index.in_process.then(|| {
            callproof_indexer::Indexers::new(
                stages.store.clone(),
                stages.signer.verifier(),
                callproof_indexer::Settings::from(&config.index),
            )
        });
        Ok(Pipeline {
            stages: Arc::new(stages),
            consumer,
            topic,
            partitions: HashMap::new(),
            fenced_in_batch: HashSet::new(),
            indexers,
        })
    }

    /// Runs until `shutdown` completes, then finishes the batch in hand, stops the indexers and
    /// leaves the group.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ProcessorError> {
        tokio::pin!(shutdown);
        tracing::info!(topic = %self.topic, group = %self.stages.config.processor.group_id, "processor started");
        let mut stopping = false;
        while !stopping {
            let batch = self.collect_batch(&mut shutdown, &mut stopping).await?;
            if !batch.is_empty() {
                self.process(batch).await?;
            }
        }
        let partitions: Vec<i32> = self.partitions.keys().copied().collect();
        self.close_partitions(&partitions).await?;
        self.consumer.unsubscribe();
        tracing::info!("processor stopped");
        Ok(())
    }

    /// Collects messages until the batch is full by count or bytes, `batch_max_wait_ms` after
    /// its first message, or shutdown. Handles rebalances as they are reported.
    async fn collect_batch(
        &mut self,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
        stopping: &mut bool,
    ) -> Result<Vec<RawMessage>, ProcessorError> {
        let settings = &self.stages.config.processor;
        let max_events = settings.batch_max_events;
        let max_bytes = settings.batch_max_bytes;
        let max_wait = Duration::from_millis(settings.batch_max_wait_ms);
        // When idle, come back now and then (shutdown is also checked while waiting).
        let idle_wait = Duration::from_millis(500);
        let mut batch: Vec<RawMessage> = Vec::new();
        let mut bytes = 0usize;
        let mut first_at: Option<Instant> = None;
        loop {
            let wait = match first_at {
                Some(first) => max_wait.saturating_sub(first.elapsed()),
                None => idle_wait,
            };
            let received = tokio::select! {
                () = shutdown.as_mut() => {
                    *stopping = true;
                    None
                }
                received = tokio::time::timeout(wait, self.consumer.recv()) => Some(received),
            };
            let mut cut = received.is_none();
            match received {
                Some(Ok(Ok(message))) => {
                    let payload = message.payload().unwrap_or_default().to_vec();
                    bytes += payload.len();
                    batch.push(RawMessage {
                        source: callproof_evidence_format::entry::KafkaSource {
                            topic: message.topic().to_string(),
                            partition: message.partition(),
                            offset: message.offset(),
                        },
                        payload,
                        timestamp_ms: message.timestamp().to_millis(),
                    });
                    first_at.get_or_insert_with(Instant::now);
                }
                Some(Ok(Err(error))) => {
                    metrics::counter!("callproof_processor_failures_total", "stage" => "consume")
                        .increment(1);
                    tracing::warn!(%error, "consumer error");
                }
                Some(Err(_elapsed)) => cut = true,
                None => {}
            }
            for event in self.consumer.context().take() {
                match event {
                    RebalanceEvent::Revoked(partitions) => {
                        tracing::info!(?partitions, "partitions revoked");
                        batch.retain(|message| !partitions.contains(&message.source.partition));
                        self.close_partitions(&partitions).await?;
                    }
                    RebalanceEvent::Assigned(partitions) => {
                        tracing::info!(?partitions, "partitions assigned");
                        // Open now rather than on the first message: a partition with nothing
                        // new still gets its indexer started on its log.
                        for partition in partitions {
                            self.open_partition(partition).await?;
                        }
                    }
                }
            }
            if cut || batch.len() >= max_events || bytes >= max_bytes {
                return Ok(batch);
            }
        }
    }

    /// Processes one batch through every stage.
    async fn process(&mut self, batch: Vec<RawMessage>) -> Result<(), ProcessorError> {
        let started = Instant::now();
        self.fenced_in_batch.clear();
        let mut by_partition: BTreeMap<i32, Vec<RawMessage>> = BTreeMap::new();
        for message in batch {
            by_partition
                .entry(message.source.partition)
                .or_default()
                .push(message);
        }
        // Line each partition's messages up with its log: drop what the log already holds,
        // refuse gaps, and give each message its index.
        let mut work: Vec<Work> = Vec::new();
        let mut n_partitions = 0;
        for (partition, messages) in by_partition {
            let Some(state) = self.partitions.get_mut(&partition) else {
                // Not assigned here (any more): its owner reads these messages from where its
                // log ends. Opening a writer for it here could make two writers of one log.
                metrics::counter!("callproof_processor_failures_total", "stage" => "unassigned")
                    .increment(messages.len() as u64);
                tracing::warn!(
                    partition,
                    n_messages = messages.len(),
                    "messages of a partition not assigned to this instance; dropped"
                );
                continue;
            };
            let next_offset = state.appender.next_offset();
            let first_offset = messages.first().map(|message| message.source.offset);
            if !state.position_checked {
                state.position_checked = true;
                if next_offset.is_none() && first_offset.is_some_and(|first| first > 0) {
                    // A new log starts at the beginning of its partition; the group's
                    // committed offset is ahead of it (it should follow the log).
                    tracing::warn!(
                        partition,
                        ?first_offset,
                        "consumer position is ahead of the log; seeking back"
                    );
                    self.consumer.seek(
                        &self.topic,
                        partition,
                        Offset::Beginning,
                        Duration::from_secs(10),
                    )?;
                    continue;
                }
            }
            let lined = line_up(next_offset, messages);
            if lined.repeated > 0 {
                metrics::counter!("callproof_processor_duplicates_skipped_total")
                    .increment(lined.repeated as u64);
                tracing::info!(
                    partition,
                    skipped = lined.repeated,
                    ?next_offset,
                    "skipped messages already in the log"
                );
            }
            if !lined.kept.is_empty() {
                state.gap_seek = None;
            }
            if let Some(gap) = lined.gap {
                metrics::counter!("callproof_processor_failures_total", "stage" => "offset_gap")
                    .increment(1);
                // First seek back to the missing offset. Should the same gap come back, seek to
                // the beginning and skip up to it: a broker may answer a fetch that starts inside
                // a record batch with the next batch (Tansu 0.6 does), and from the beginning
                // every batch is read whole.
                let attempts = match state.gap_seek {
                    Some((offset, attempts)) if offset == gap.expected => attempts,
                    _ => 0,
                };
                let target = match attempts {
                    0 => Offset::Offset(gap.expected),
                    1 => Offset::Beginning,
                    // Read from the beginning, the partition still skips the expected offset:
                    // the broker no longer has those messages (retention, compaction).
                    // Appending past them would hide their loss in the evidence.
                    _ => {
                        return Err(ProcessorError::OffsetGap {
                            partition,
                            expected: gap.expected,
                            found: gap.found,
                        });
                    }
                };
                tracing::warn!(
                    partition,
                    expected = gap.expected,
                    found = gap.found,
                    ?target,
                    "consumer position is ahead of the log; seeking back"
                );
                self.consumer
                    .seek(&self.topic, partition, target, Duration::from_secs(10))?;
                state.gap_seek = Some((gap.expected, attempts + 1));
            }
            if lined.kept.is_empty() {
                continue;
            }
            n_partitions += 1;
            let base = state.appender.size();
            let sequencer = &mut state.sequencer;
            work.extend(
                lined
                    .kept
                    .into_iter()
                    .enumerate()
                    .map(|(position, message)| {
                        // In log order, before the events are decoded on every core.
                        let seq = callproof_schemas::peek_head(&message.payload).map(|head| {
                            sequencer.number(
                                head.call_id,
                                head.seq,
                                head.time,
                                message.source.offset,
                            )
                        });
                        Work {
                            log_index: base + position as u64,
                            seq,
                            message,
                        }
                    }),
            );
        }
        if work.is_empty() {
            return Ok(());
        }
        let n_events = work.len();
        metrics::histogram!("callproof_processor_batch_events").record(n_events as f64);
        metrics::histogram!("callproof_processor_batch_bytes").record(
            work.iter()
                .map(|work| work.message.payload.len())
                .sum::<usize>() as f64,
        );

        // Decode, mask and encode a chunk on every core while the chunk before it is published,
        // and appended: those stages mostly wait for the broker and the store.
        let mut chunks: Vec<Vec<Work>> = Vec::new();
        let mut rest = work.into_iter().peekable();
        while rest.peek().is_some() {
            chunks.push(rest.by_ref().take(PIPELINE_CHUNK_EVENTS).collect());
        }
        let stages = self.stages.clone();
        let prepare = |chunk: Vec<Work>| tokio::spawn(prepare_all(stages.clone(), chunk));
        let mut chunks = chunks.into_iter();
        let mut preparing = chunks.next().map(prepare);
        while let Some(handle) = preparing.take() {
            let prepared = handle.await.map_err(ProcessorError::task)??;
            preparing = chunks.next().map(prepare);
            self.finish(prepared).await?;
        }
        tracing::debug!(
            n_events,
            partitions = n_partitions,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "batch done"
        );
        Ok(())
    }

    /// Publishes and appends prepared messages (consecutive per partition, continuing
    /// each partition's log), then commits their offsets to the group.
    async fn finish(&mut self, mut prepared: Vec<Prepared>) -> Result<(), ProcessorError> {
        // SIEM first: acknowledged before the checkpoint, so at least once.
        let siem_started = Instant::now();
        let records: Vec<SiemRecord> = prepared
            .iter_mut()
            .map(|prepared| std::mem::take(&mut prepared.siem))
            .collect();
        let report = self
            .stages
            .siem
            .publish(&records, APPEND_RETRY_LIMIT)
            .await?;
        if report != PublishReport::default() {
            tracing::warn!(
                stubbed = report.stubbed,
                dropped = report.dropped,
                "some SIEM records were too large for the broker; their events are in the log"
            );
        }
        metrics::histogram!("callproof_processor_siem_publish_seconds")
            .record(siem_started.elapsed().as_secs_f64());

        // Append: one checkpoint per partition, all partitions at once.
        let append_started = Instant::now();
        let mut per_partition: BTreeMap<i32, Vec<Prepared>> = BTreeMap::new();
        for item in prepared {
            per_partition.entry(item.partition).or_default().push(item);
        }
        // A partition fenced earlier in this batch: the rest of the batch was lined up with
        // the log as it was, so it is dropped and read again after the log reopened.
        per_partition.retain(|partition, _| !self.fenced_in_batch.contains(partition));
        let mut fenced = Vec::new();
        {
            let mut appends_in_flight = Vec::new();
            for (partition, state) in self.partitions.iter_mut() {
                let Some(items) = per_partition.get_mut(partition) else {
                    continue;
                };
                let Some(next) = items.last().map(|item| item.offset + 1) else {
                    continue;
                };
                let entries: Vec<EncodedEntry> = items
                    .iter_mut()
                    .map(|item| std::mem::take(&mut item.entry))
                    .collect();
                let partition = *partition;
                let sequences = state.sequencer.extensions_through(next - 1);
                appends_in_flight.push(async move {
                    let appended = state.appender.append(entries, next, sequences).await;
                    if appended.is_ok() {
                        state.sequencer.appended_through(next - 1);
                    }
                    (partition, appended)
                });
            }
            for (partition, result) in futures::future::join_all(appends_in_flight).await {
                match result {
                    Ok(_) => {}
                    Err(ProcessorError::Log {
                        source: callproof_tlog::Error::Fenced { size },
                        ..
                    }) => {
                        metrics::counter!("callproof_processor_failures_total", "stage" => "fenced")
                            .increment(1);
                        tracing::warn!(
                            partition,
                            log_size = size,
                            "another writer appended to this partition's log first; this batch is dropped and the log reopened"
                        );
                        fenced.push(partition);
                    }
                    Err(error) => return Err(error),
                }
            }
        }
        for partition in &fenced {
            per_partition.remove(partition);
        }
        self.reopen_fenced(fenced).await?;
        metrics::histogram!("callproof_processor_append_seconds")
            .record(append_started.elapsed().as_secs_f64());
        let checkpointed_ms = now_ms();
        for (partition, items) in &per_partition {
            for item in items {
                if let Some(produced) = item.timestamp_ms {
                    metrics::histogram!("callproof_processor_checkpoint_lag_seconds")
                        .record((checkpointed_ms - produced).max(0) as f64 / 1000.0);
                }
            }
            let label = partition.to_string();
            metrics::counter!("callproof_processor_events_total", "partition" => label.clone())
                .increment(items.len() as u64);
            if let Some(state) = self.partitions.get(partition) {
                metrics::gauge!("callproof_processor_log_size", "partition" => label)
                    .set(state.appender.size() as f64);
            }
        }

        let mut offsets = TopicPartitionList::new();
        for (partition, items) in per_partition {
            if let Some(last) = items.last() {
                offsets.add_partition_offset(
                    &self.topic,
                    partition,
                    Offset::Offset(last.offset + 1),
                )?;
            }
        }

        // The group commit follows the checkpoints.
        if let Err(error) = self.consumer.commit(&offsets, CommitMode::Async) {
            tracing::warn!(%error, "offset commit failed; the log's checkpoints still hold the position");
        }
        Ok(())
    }

    /// Opens a partition's log (on assignment) and starts its indexer.
    async fn open_partition(&mut self, partition: i32) -> Result<(), ProcessorError> {
        if self.partitions.contains_key(&partition) {
            return Ok(());
        }
        let stages = &self.stages;
        let origin = format!("{}/{partition}", stages.origin);
        let appender = LogAppender::open(
            stages.store.clone(),
            stages.signer.clone(),
            origin,
            &self.topic,
            partition,
        )
        .await?;
        let reader = LogReader::new(
            stages.store.clone(),
            log_prefix(partition),
            stages.signer.verifier(),
        );
        let sequencer = Sequencer::recover(
            &appender.checkpoint().checkpoint,
            &reader,
            &stages.store,
            partition,
        )
        .await?;
        tracing::info!(
            partition,
            log_size = appender.size(),
            next_offset = ?appender.next_offset(),
            "partition opened"
        );
        self.partitions.insert(
            partition,
            PartitionState {
                appender,
                sequencer,
                position_checked: false,
                gap_seek: None,
            },
        );
        if let Some(indexers) = &mut self.indexers {
            indexers.start(partition);
        }
        Ok(())
    }

    /// Reopens the logs of partitions whose append was fenced: the log as another writer
    /// left it (its last claimed append completed). Whether the
    /// partition is still this instance's is the group's to say at the next poll; until then
    /// nothing this writer appends can fork the log.
    async fn reopen_fenced(&mut self, fenced: Vec<i32>) -> Result<(), ProcessorError> {
        if fenced.is_empty() {
            return Ok(());
        }
        self.close_partitions(&fenced).await?;
        for partition in fenced {
            self.fenced_in_batch.insert(partition);
            self.open_partition(partition).await?;
        }
        Ok(())
    }

    /// Stops the indexers of partitions and forgets their logs.
    async fn close_partitions(&mut self, partitions: &[i32]) -> Result<(), ProcessorError> {
        for partition in partitions {
            let Some(state) = self.partitions.remove(partition) else {
                continue;
            };
            if let Some(indexers) = &mut self.indexers {
                indexers.stop(*partition);
            }
            tracing::info!(
                partition,
                log_size = state.appender.size(),
                "partition closed"
            );
        }
        Ok(())
    }
}

/// The consumer: a group member with manual offsets.
pub fn consumer_config(config: &Config) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("bootstrap.servers", &config.kafka.brokers)
        .set("group.id", &config.processor.group_id)
        .set("client.id", "callproof-processor")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("queued.min.messages", "20000")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        // A broker holds a fetch up to this long when it has less than fetch.min.bytes: the
        // default (500 ms) would dominate the produce-to-checkpoint lag at moderate rates.
        .set("fetch.wait.max.ms", "50")
        .set("statistics.interval.ms", "5000");
    for (key, value) in &config.kafka.properties {
        client.set(key, value);
    }
    client
}

/// Decodes, masks and encodes a batch on every core, keeping the order.
///
/// Threads take small chunks from a shared counter rather than one big share each: the broker,
/// librdkafka and tantivy run on the same cores, and with fixed shares the batch would wait for
/// whichever thread they slowed down most. They are the runtime's blocking threads, which
/// outlive a batch: new threads per batch started with cold allocator caches and stacks.
async fn prepare_all(
    stages: Arc<Stages>,
    work: Vec<Work>,
) -> Result<Vec<Prepared>, ProcessorError> {
    const CHUNK: usize = 128;
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .clamp(1, 8);
    let n_messages = work.len();
    let work = Arc::new(work);
    let next_chunk = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let handles: Vec<_> = (0..threads.min(n_messages.div_ceil(CHUNK)))
        .map(|_| {
            let (stages, work, next_chunk) = (stages.clone(), work.clone(), next_chunk.clone());
            tokio::task::spawn_blocking(move || {
                let mut done = Vec::new();
                loop {
                    let position = next_chunk.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let start = position * CHUNK;
                    let Some(chunk) = work.get(start..(start + CHUNK).min(work.len())) else {
                        return done;
                    };
                    let prepared = chunk
                        .iter()
                        .map(|work| prepare(&stages, work))
                        .collect::<Vec<_>>();
                    done.push((position, prepared));
                }
            })
        })
        .collect();
    let mut by_position: Vec<(usize, Vec<Prepared>)> = Vec::new();
    for handle in handles {
        by_position.extend(handle.await.map_err(ProcessorError::task)?);
    }
    by_position.sort_unstable_by_key(|(position, _)| *position);
    let mut prepared = Vec::with_capacity(n_messages);
    for (_, chunk) in by_position {
        prepared.extend(chunk);
    }
    Ok(prepared)
}

/// One message through Decoder and Masker to its entry and SIEM record.
///
/// Never fails for one message's sake: an event that cannot be turned into an entry is
/// recorded like an undecodable message (its payload's hash and size, never its content), so
/// the log still accounts for every message and the next one is not held up behind it. An
/// error here would stop the processor, and the restart would meet the same message again.
fn prepare(stages: &Stages, work: &Work) -> Prepared {
    let Work {
        message,
        log_index,
        seq,
    } = work;
    let log_index = *log_index;
    let source = &message.source;
    let partition = source.partition;
    let origin = format!("{}/{partition}", stages.origin);
    let log = LogPosition {
        partition,
        index: log_index,
        origin: &origin,
    };
    let undecodable = |reason: String, payload_sha256: String, stage: &'static str| {
        tracing::warn!(partition, offset = source.offset, %reason, "message recorded as undecodable");
        metrics::counter!("callproof_processor_failures_total", "stage" => stage).increment(1);
        let document = json!({"undecodable": {
            "reason": reason,
            "payload_sha256": payload_sha256,
            "payload_bytes": message.payload.len(),
        }, "source": source.to_value()});
        // An undecodable entry is a few hundred bytes: it always fits.
        let entry = encode_entry(&document).unwrap_or_else(|_| EncodedEntry {
            bytes: canonical_json(&document),
            blobs: Vec::new(),
        });
        Prepared {
            partition,
            offset: source.offset,
            siem: SiemRecord::of_undecodable(&document, log),
            entry,
            timestamp_ms: message.timestamp_ms,
        }
    };
    let payload_sha256 = || hex::encode(Sha256::digest(&message.payload));
    let mut event = match Decoder.decode(&message.payload) {
        Decoded::Event(event) => event,
        Decoded::Undecodable {
            reason,
            payload_sha256,
            ..
        } => return undecodable(reason, payload_sha256, "decode"),
    };
    let gateway_seq = match seq {
        Some(seq) if *seq != event.seq => {
            metrics::counter!("callproof_processor_events_renumbered_total").increment(1);
            tracing::info!(
                partition,
                offset = source.offset,
                call_id = %event.call_id,
                gateway_seq = event.seq,
                seq,
                "an earlier event of the call has its seq; numbered next"
            );
            Some(std::mem::replace(&mut event.seq, *seq))
        }
        _ => None,
    };
    let entry_source = EntrySource {
        kafka: source,
        gateway_seq,
    };
    stages.masker.mask(&mut event);
    let bytes = event_entry_bytes(&event, entry_source);
    let entry = if bytes.len() <= MAX_ENTRY_BYTES {
        EncodedEntry {
            bytes,
            blobs: Vec::new(),
        }
    } else {
        // Rare: move the largest values to blobs, which needs the entry as a JSON tree.
        let document = serde_json::to_value(&*event)
            .map(|event| json!({"event": event, "source": entry_source.to_value()}))
            .map_err(|error| ProcessorError::Encode(error.to_string()))
            .and_then(|document| encode_entry(&document).map_err(ProcessorError::from));
        match document {
            Ok(entry) => entry,
            Err(error) => return undecodable(error.to_string(), payload_sha256(), "encode"),
        }
    };
    Prepared {
        partition,
        offset: source.offset,
        siem: SiemRecord::of_event(&event, source, log),
        entry,
        timestamp_ms: message.timestamp_ms,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use callproof_evidence_format::entry::KafkaSource;

    fn messages(offsets: &[i64]) -> Vec<RawMessage> {
        offsets
            .iter()
            .map(|&offset| RawMessage {
                source: KafkaSource {
                    topic: "calls".into(),
                    partition: 0,
                    offset,
                },
                payload: Vec::new(),
                timestamp_ms: None,
            })
            .collect()
    }

    fn offsets(lined: &LinedUp) -> Vec<i64> {
        lined.kept.iter().map(|m| m.source.offset).collect()
    }

    #[test]
    fn line_up_skips_what_the_log_holds_and_keeps_the_rest() {
        let lined = line_up(Some(5), messages(&[3, 4, 5, 6, 7]));
        assert_eq!(offsets(&lined), [5, 6, 7]);
        assert_eq!(lined.repeated, 2);
        assert_eq!(lined.gap, None);
    }

    #[test]
    fn line_up_of_a_new_log_starts_anywhere_then_needs_consecutive_offsets() {
        let lined = line_up(None, messages(&[10, 11, 11, 12, 14, 15]));
        assert_eq!(offsets(&lined), [10, 11, 12]);
        assert_eq!(lined.repeated, 1);
        assert_eq!(
            lined.gap,
            Some(OffsetGap {
                expected: 13,
                found: 14
            })
        );
    }

    #[test]
    fn line_up_refuses_a_batch_that_starts_past_the_log() {
        let lined = line_up(Some(5), messages(&[8, 9]));
        assert!(lined.kept.is_empty());
        assert_eq!(
            lined.gap,
            Some(OffsetGap {
                expected: 5,
                found: 8
            })
        );
    }
}
