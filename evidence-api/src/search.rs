//! Search over the processor's per-partition tantivy indexes, opened read-only.
//!
//! Each partition's index gets one `IndexReader` that reloads on commit, so new events show up
//! within moments of the processor's commit without this process ever taking the writer lock.
//! Hits are ordered newest first by `(time, partition, log_index)`, a total order, so a cursor
//! (the key of the last hit of a page) pages without skipping or repeating hits, even among
//! events with the same microsecond, and while new events arrive (they sort before the cursor).
//!
//! The indexes are opened strictly read-only (`ReadOnlyDirectory`): production mounts the
//! processor's index read-only here (`docker-compose.yml`), where tantivy's own directory cannot
//! open a reader.
//!
//! An index written with an older schema (a processor not yet upgraded) is searched by the
//! fields it has: a query or filter naming a field it lacks finds nothing there. Once the
//! processor has rebuilt it at the same path with today's schema, the next listing of the
//! directory opens it again.
//!
//! Everything here is blocking (tantivy is): callers run it in `spawn_blocking`.

use std::fs::{File, TryLockError};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callproof_evidence_format::index_schema::IndexFields;
use serde::Serialize;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::directory::error::{DeleteError, LockError, OpenReadError, OpenWriteError};
use tantivy::directory::{
    Directory, DirectoryLock, FileHandle, Lock, META_LOCK, MmapDirectory, WatchCallback,
    WatchHandle, WritePtr,
};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TantivyDocument, Value as _};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{
    DateTime, DocAddress, Index, IndexReader, ReloadPolicy, Searcher, SegmentReader, Term,
};

/// The event kinds a `kind` filter accepts.
pub const EVENT_KINDS: [&str; 9] = [
    "call_received",
    "call_denied",
    "approval_requested",
    "approval_decided",
    "approval_expired",
    "call_forwarded",
    "call_completed",
    "call_failed",
    "undecodable",
];

/// The outcomes an `mcp_outcome` filter accepts (`callproof_schemas::McpOutcome`).
pub const MCP_OUTCOMES: [&str; 4] = ["result", "tool_error", "jsonrpc_error", "transport_error"];

/// How often the index directory is listed again for partitions that appeared.
const RESCAN_INTERVAL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query or a filter is not valid; the message says why.
    #[error("{0}")]
    BadQuery(String),
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
}

/// What to search for. Every `Some` field must match (AND).
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// tantivy query syntax over the indexed fields; bare words search the masked bodies and
    /// the ids, subject, agent and function.
    pub query: Option<String>,
    /// Inclusive lower bound, µs since the epoch.
    pub from_micros: Option<i64>,
    /// Exclusive upper bound, µs since the epoch.
    pub to_micros: Option<i64>,
    pub subject: Option<String>,
    pub group: Option<String>,
    pub agent: Option<String>,
    pub function: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    pub detector: Option<String>,
    pub reviewer: Option<String>,
    pub call_id: Option<String>,
    /// The upstream MCP server of a call through `/mcp`.
    pub mcp_server: Option<String>,
    /// The tool's name at that server.
    pub mcp_tool: Option<String>,
    /// One of [`MCP_OUTCOMES`].
    pub mcp_outcome: Option<String>,
}

/// The sort key of a hit, newest first; also the cursor of the next page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub time_micros: i64,
    pub partition: i32,
    pub log_index: u64,
}

impl Cursor {
    /// An opaque token: base64url of `v1:<time>:<partition>:<index>`.
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "v1:{}:{}:{}",
            self.time_micros, self.partition, self.log_index
        ))
    }

    pub fn decode(token: &str) -> Result<Cursor, SearchError> {
        let bad = || SearchError::BadQuery("`cursor` is not a cursor this API returned".into());
        let text = URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(bad)?;
        let mut parts = text.split(':');
        if parts.next() != Some("v1") {
            return Err(bad());
        }
        let mut next = || parts.next().ok_or_else(bad);
        let time_micros = next()?.parse().map_err(|_| bad())?;
        let partition = next()?.parse().map_err(|_| bad())?;
        let log_index = next()?.parse().map_err(|_| bad())?;
        Ok(Cursor {
            time_micros,
            partition,
            log_index,
        })
    }
}

/// One indexed event: what the index stores of it, and where its entry is.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct IndexedEvent {
    pub time_micros: i64,
    pub partition: i32,
    pub log_index: u64,
    pub event_id: Option<String>,
    pub call_id: Option<String>,
    pub kind: Option<String>,
    pub subject: Option<String>,
    pub groups: Vec<String>,
    pub agent: Option<String>,
    pub function: Option<String>,
    pub decision: Option<String>,
    pub reviewer: Option<String>,
    pub detectors: Vec<String>,
    pub status: Option<i64>,
}

impl IndexedEvent {
    pub fn key(&self) -> Cursor {
        Cursor {
            time_micros: self.time_micros,
            partition: self.partition,
            log_index: self.log_index,
        }
    }
}

/// One page of hits, newest first.
#[derive(Clone, Debug)]
pub struct SearchPage {
    pub hits: Vec<IndexedEvent>,
    /// Set when more hits follow.
    pub next_cursor: Option<Cursor>,
}

#[derive(Clone)]
struct PartitionIndex {
    partition: i32,
    reader: IndexReader,
    /// Written with this version's schema. An index written before a field was added (a
    /// processor not yet upgraded) is still searched, by the fields it has.
    current: bool,
}

/// The processor's indexes, read-only.
pub struct SearchIndex {
    root: PathBuf,
    fields: IndexFields,
    parser: QueryParser,
    partitions: RwLock<(Instant, Arc<Vec<PartitionIndex>>)>,
}

impl SearchIndex {
    /// Opens every partition index under `root` (there may be none yet).
    pub fn open(root: &Path) -> Result<SearchIndex, SearchError> {
        let fields = IndexFields::new();
        let mut parser = QueryParser::new(
            fields.schema.clone(),
            fields.default_query_fields(),
            TokenizerManager::default(),
        );
        // An auditor's `refund customer` means both words, as in most search boxes.
        parser.set_conjunction_by_default();
        let partitions = open_read_only_indexes(root)?
            .into_iter()
            .map(|(partition, index)| partition_index(partition, &index, &fields.schema))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SearchIndex {
            root: root.to_path_buf(),
            fields,
            parser,
            partitions: RwLock::new((Instant::now(), Arc::new(partitions))),
        })
    }

    pub fn fields(&self) -> &IndexFields {
        &self.fields
    }

    /// The partition readers, listing the directory again now and then for new partitions.
    fn partitions(&self) -> Result<Arc<Vec<PartitionIndex>>, SearchError> {
        if let Ok(guard) = self.partitions.read()
            && guard.0.elapsed() < RESCAN_INTERVAL
        {
            return Ok(guard.1.clone());
        }
        let known = self
            .partitions
            .read()
            .map(|guard| guard.1.clone())
            .unwrap_or_default();
        let mut readers: Vec<PartitionIndex> = known.iter().cloned().collect();
        for (partition, index) in open_read_only_indexes(&self.root)? {
            match readers
                .iter_mut()
                .find(|known| known.partition == partition)
            {
                None => readers.push(partition_index(partition, &index, &self.fields.schema)?),
                // A reader keeps the schema of the index it was opened on; the processor
                // replaces an index of an older schema with a new one at the same path.
                Some(known) if known.reader.searcher().schema() != &index.schema() => {
                    *known = partition_index(partition, &index, &self.fields.schema)?;
                }
                Some(_) => {}
            }
        }
        readers.sort_by_key(|reader| reader.partition);
        let readers = Arc::new(readers);
        if let Ok(mut guard) = self.partitions.write() {
            *guard = (Instant::now(), readers.clone());
        }
        Ok(readers)
    }

    /// The partitions that have an index.
    pub fn partition_ids(&self) -> Result<Vec<i32>, SearchError> {
        Ok(self.partitions()?.iter().map(|p| p.partition).collect())
    }

    /// One page of hits, newest first, after `cursor` if given.
    pub fn search(
        &self,
        filter: &Filter,
        limit: usize,
        cursor: Option<Cursor>,
    ) -> Result<SearchPage, SearchError> {
        let query = self.query(filter)?;
        let limit = limit.max(1);
        let mut keyed: Vec<(Cursor, PartitionIndex, DocAddress)> = Vec::new();
        for partition in self.partitions()?.iter() {
            let Some(query) = self.partition_query(filter, query.as_ref(), partition)? else {
                continue;
            };
            let query: Box<dyn Query> = match cursor {
                None => query,
                Some(cursor) => match self.after_cursor(partition.partition, cursor) {
                    None => continue,
                    Some(after) => Box::new(BooleanQuery::new(vec![
                        (Occur::Must, query),
                        (Occur::Must, after),
                    ])),
                },
            };
            let searcher = partition.reader.searcher();
            // One more than a page, to know whether another page follows.
            let top = searcher.search(
                &query,
                &TopDocs::with_limit(limit + 1).order_by(newest_first),
            )?;
            for ((time_micros, log_index), address) in top {
                let key = Cursor {
                    time_micros,
                    partition: partition.partition,
                    log_index,
                };
                keyed.push((key, partition.clone(), address));
            }
        }
        keyed.sort_by_key(|keyed| std::cmp::Reverse(keyed.0));
        let more = keyed.len() > limit;
        keyed.truncate(limit);
        let mut hits = Vec::with_capacity(keyed.len());
        let mut searchers: Vec<(i32, Searcher)> = Vec::new();
        for (_, partition, address) in keyed {
            let searcher = match searchers.iter().find(|(p, _)| *p == partition.partition) {
                Some((_, searcher)) => searcher.clone(),
                None => {
                    let searcher = partition.reader.searcher();
                    searchers.push((partition.partition, searcher.clone()));
                    searcher
                }
            };
            hits.push(self.event(&searcher, address)?);
        }
        let next_cursor = if more {
            hits.last().map(IndexedEvent::key)
        } else {
            None
        };
        Ok(SearchPage { hits, next_cursor })
    }

    /// Every matching event, in no particular order (reports and exports).
    pub fn scan(&self, filter: &Filter) -> Result<Vec<IndexedEvent>, SearchError> {
        let query = self.query(filter)?;
        let mut events = Vec::new();
        for partition in self.partitions()?.iter() {
            let Some(query) = self.partition_query(filter, query.as_ref(), partition)? else {
                continue;
            };
            let searcher = partition.reader.searcher();
            for address in searcher.search(&query, &DocSetCollector)? {
                events.push(self.event(&searcher, address)?);
            }
        }
        Ok(events)
    }

    /// How many events match.
    pub fn count(&self, filter: &Filter) -> Result<usize, SearchError> {
        let query = self.query(filter)?;
        let mut total = 0;
        for partition in self.partitions()?.iter() {
            if let Some(query) = self.partition_query(filter, query.as_ref(), partition)? {
                total += partition.reader.searcher().search(&query, &Count)?;
            }
        }
        Ok(total)
    }

    /// The query of a filter: the parsed query string AND each filter.
    pub fn query(&self, filter: &Filter) -> Result<Box<dyn Query>, SearchError> {
        let fields = &self.fields;
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(text) = query_text(filter) {
            let parsed = self.parser.parse_query(text).map_err(|error| {
                SearchError::BadQuery(format!("`q` is not a valid query: {error}"))
            })?;
            clauses.push((Occur::Must, parsed));
        }
        if let Some(kind) = &filter.kind
            && !EVENT_KINDS.contains(&kind.as_str())
        {
            return Err(SearchError::BadQuery(format!(
                "`kind` must be one of {}, not {kind:?}",
                EVENT_KINDS.join(", ")
            )));
        }
        if let Some(decision) = &filter.decision
            && decision != "allow"
            && decision != "deny"
        {
            return Err(SearchError::BadQuery(format!(
                "`decision` must be `allow` or `deny`, not {decision:?}"
            )));
        }
        if let Some(outcome) = &filter.mcp_outcome
            && !MCP_OUTCOMES.contains(&outcome.as_str())
        {
            return Err(SearchError::BadQuery(format!(
                "`mcp_outcome` must be one of {}, not {outcome:?}",
                MCP_OUTCOMES.join(", ")
            )));
        }
        for (field, value) in self.term_filters(filter) {
            if let Some(value) = value {
                clauses.push((Occur::Must, term_query(field, value)));
            }
        }
        if filter.from_micros.is_some() || filter.to_micros.is_some() {
            if let (Some(from), Some(to)) = (filter.from_micros, filter.to_micros)
                && from >= to
            {
                return Err(SearchError::BadQuery("`from` must be before `to`".into()));
            }
            let bound = |micros: Option<i64>, inclusive: bool| match micros {
                None => Bound::Unbounded,
                Some(micros) => {
                    let term = date_term(fields.time, micros);
                    if inclusive {
                        Bound::Included(term)
                    } else {
                        Bound::Excluded(term)
                    }
                }
            };
            clauses.push((
                Occur::Must,
                Box::new(RangeQuery::new(
                    bound(filter.from_micros, true),
                    bound(filter.to_micros, false),
                )),
            ));
        }
        Ok(match clauses.len() {
            0 => Box::new(AllQuery),
            1 => clauses
                .pop()
                .map(|(_, query)| query)
                .unwrap_or_else(|| Box::new(AllQuery)),
            _ => Box::new(BooleanQuery::new(clauses)),
        })
    }

    /// Each exact-value filter with its field.
    fn term_filters<'a>(&self, filter: &'a Filter) -> [(Field, &'a Option<String>); 12] {
        let fields = &self.fields;
        [
            (fields.subject, &filter.subject),
            (fields.groups, &filter.group),
            (fields.agent, &filter.agent),
            (fields.function, &filter.function),
            (fields.kind, &filter.kind),
            (fields.decision, &filter.decision),
            (fields.detectors, &filter.detector),
            (fields.reviewer, &filter.reviewer),
            (fields.call_id, &filter.call_id),
            (fields.mcp_server, &filter.mcp_server),
            (fields.mcp_tool, &filter.mcp_tool),
            (fields.mcp_outcome, &filter.mcp_outcome),
        ]
    }

    /// The query to run over one partition: `query` (the filter's, validated) where the index
    /// has this version's schema; else the filter's query built again over the index's own
    /// schema, or `None` when it names a field that index lacks, none of whose documents can
    /// then match. Building `query` over such an index would name a field id past its schema,
    /// which tantivy answers with a panic.
    fn partition_query(
        &self,
        filter: &Filter,
        query: &dyn Query,
        partition: &PartitionIndex,
    ) -> Result<Option<Box<dyn Query>>, SearchError> {
        if partition.current {
            return Ok(Some(query.box_clone()));
        }
        let schema = partition.reader.searcher().schema().clone();
        // Fields keep their ids across versions (new ones are added last), so a field this
        // version knows is usable there if the index has it under the same id and name.
        let has = |field: Field| {
            schema
                .get_field(self.fields.schema.get_field_name(field))
                .ok()
                == Some(field)
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        if let Some(text) = query_text(filter) {
            let default_fields = self
                .fields
                .default_query_fields()
                .into_iter()
                .filter(|field| has(*field))
                .collect();
            let mut parser =
                QueryParser::new(schema.clone(), default_fields, TokenizerManager::default());
            parser.set_conjunction_by_default();
            // It parsed over this version's schema: an error here is a field the index lacks.
            let Ok(parsed) = parser.parse_query(text) else {
                return Ok(None);
            };
            clauses.push((Occur::Must, parsed));
        }
        let without_query = Filter {
            query: None,
            ..filter.clone()
        };
        for (field, value) in self.term_filters(&without_query) {
            if value.is_some() && !has(field) {
                return Ok(None);
            }
        }
        clauses.push((Occur::Must, self.query(&without_query)?));
        Ok(Some(Box::new(BooleanQuery::new(clauses))))
    }

    /// The hits of `partition` that sort after `cursor` (newest first by time, partition,
    /// index), or `None` when none can.
    fn after_cursor(&self, partition: i32, cursor: Cursor) -> Option<Box<dyn Query>> {
        let time = self.fields.time;
        let older = |inclusive: bool| -> Box<dyn Query> {
            let term = date_term(time, cursor.time_micros);
            Box::new(RangeQuery::new(
                Bound::Unbounded,
                if inclusive {
                    Bound::Included(term)
                } else {
                    Bound::Excluded(term)
                },
            ))
        };
        use std::cmp::Ordering;
        Some(match partition.cmp(&cursor.partition) {
            Ordering::Less => older(true),
            Ordering::Greater => older(false),
            Ordering::Equal => {
                let same_time: Box<dyn Query> = Box::new(RangeQuery::new(
                    Bound::Included(date_term(time, cursor.time_micros)),
                    Bound::Included(date_term(time, cursor.time_micros)),
                ));
                let lower_index: Box<dyn Query> = Box::new(RangeQuery::new(
                    Bound::Unbounded,
                    Bound::Excluded(Term::from_field_u64(
                        self.fields.log_index,
                        cursor.log_index,
                    )),
                ));
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, older(false)),
                    (
                        Occur::Should,
                        Box::new(BooleanQuery::new(vec![
                            (Occur::Must, same_time),
                            (Occur::Must, lower_index),
                        ])),
                    ),
                ]))
            }
        })
    }

    fn event(&self, searcher: &Searcher, address: DocAddress) -> Result<IndexedEvent, SearchError> {
        let fields = &self.fields;
        let document: TantivyDocument = searcher.doc(address)?;
        let text = |field: Field| {
            document
                .get_first(field)
                .and_then(|value| value.as_str())
                .map(str::to_string)
        };
        let texts = |field: Field| {
            document
                .get_all(field)
                .filter_map(|value| value.as_str().map(str::to_string))
                .collect::<Vec<_>>()
        };
        let u64_of = |field: Field| document.get_first(field).and_then(|value| value.as_u64());
        Ok(IndexedEvent {
            time_micros: document
                .get_first(fields.time)
                .and_then(|value| value.as_datetime())
                .map(|time| time.into_timestamp_micros())
                .unwrap_or_default(),
            partition: u64_of(fields.partition)
                .and_then(|partition| i32::try_from(partition).ok())
                .unwrap_or_default(),
            log_index: u64_of(fields.log_index).unwrap_or_default(),
            event_id: text(fields.event_id),
            call_id: text(fields.call_id),
            kind: text(fields.kind),
            subject: text(fields.subject),
            groups: texts(fields.groups),
            agent: text(fields.agent),
            function: text(fields.function),
            decision: text(fields.decision),
            reviewer: text(fields.reviewer),
            detectors: texts(fields.detectors),
            status: document
                .get_first(fields.status)
                .and_then(|value| value.as_i64()),
        })
    }
}

/// A partition's reader, and whether its index has this version's schema (`schema`).
fn partition_index(
    partition: i32,
    index: &Index,
    schema: &Schema,
) -> Result<PartitionIndex, SearchError> {
    Ok(PartitionIndex {
        partition,
        reader: reader_of(index)?,
        current: &index.schema() == schema,
    })
}

/// The query string of a filter, if it says anything.
fn query_text(filter: &Filter) -> Option<&str> {
    filter
        .query
        .as_deref()
        .filter(|text| !text.trim().is_empty())
}

/// Every partition index under `root` (directories named by partition number that hold a
/// `meta.json`, the processor's layout), each through a [`ReadOnlyDirectory`].
fn open_read_only_indexes(root: &Path) -> tantivy::Result<Vec<(i32, Index)>> {
    callproof_evidence_format::index_schema::partition_index_dirs(root)?
        .into_iter()
        .map(|(partition, dir)| Ok((partition, Index::open(ReadOnlyDirectory::open(&dir)?)?)))
        .collect()
}

/// A partition's index directory, read-only.
///
/// Production mounts the index read-only here (`index:/var/lib/callproof/index:ro`), and
/// tantivy's `MmapDirectory` cannot open a reader there: every reader load and reload takes the
/// meta lock (so that the writer's garbage collection does not delete the segments being
/// opened) by opening `.tantivy-meta.lock` for writing, creating it if need be, which fails with
/// "Read-only file system". This directory reads files and watches `meta.json` through an
/// `MmapDirectory`, takes the meta lock as a *shared* `flock` on the lock file opened for
/// reading (`flock` needs no write access, and it locks the file itself, so the processor's
/// garbage collection, which takes it exclusively through its own mount, still waits for a load
/// in progress, and readers do not wait for each other), and refuses every write, so that this
/// process never changes the index even where the mount would let it.
#[derive(Clone, Debug)]
struct ReadOnlyDirectory {
    root: PathBuf,
    files: MmapDirectory,
}

impl ReadOnlyDirectory {
    fn open(root: &Path) -> tantivy::Result<ReadOnlyDirectory> {
        Ok(ReadOnlyDirectory {
            root: root.to_path_buf(),
            files: MmapDirectory::open(root)?,
        })
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::ReadOnlyFilesystem,
        "the evidence API opens the index read-only",
    )
}

impl Directory for ReadOnlyDirectory {
    fn get_file_handle(&self, path: &Path) -> Result<Arc<dyn FileHandle>, OpenReadError> {
        self.files.get_file_handle(path)
    }

    fn exists(&self, path: &Path) -> Result<bool, OpenReadError> {
        self.files.exists(path)
    }

    fn atomic_read(&self, path: &Path) -> Result<Vec<u8>, OpenReadError> {
        self.files.atomic_read(path)
    }

    fn watch(&self, watch_callback: WatchCallback) -> tantivy::Result<WatchHandle> {
        self.files.watch(watch_callback)
    }

    fn acquire_lock(&self, lock: &Lock) -> Result<DirectoryLock, LockError> {
        // Readers take only the meta lock; the writer lock is for writers.
        if lock.filepath != META_LOCK.filepath {
            return Err(LockError::wrap_io_error(read_only()));
        }
        let file = match File::open(self.root.join(&lock.filepath)) {
            Ok(file) => file,
            // The writer has not collected garbage in this index yet (the lock file appears
            // with its first collection), so there is no lock to share. Should a first
            // collection delete a segment while this load opens it, the load fails and the
            // reload after the next commit tries again.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(DirectoryLock::from(Box::new(())));
            }
            Err(error) => return Err(LockError::wrap_io_error(error)),
        };
        if lock.is_blocking {
            file.lock_shared().map_err(LockError::wrap_io_error)?;
        } else {
            match file.try_lock_shared() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(LockError::LockBusy),
                Err(TryLockError::Error(error)) => return Err(LockError::wrap_io_error(error)),
            }
        }
        // Closing the file releases the lock.
        Ok(DirectoryLock::from(Box::new(file)))
    }

    fn delete(&self, path: &Path) -> Result<(), DeleteError> {
        Err(DeleteError::IoError {
            io_error: Arc::new(read_only()),
            filepath: path.to_path_buf(),
        })
    }

    fn open_write(&self, path: &Path) -> Result<WritePtr, OpenWriteError> {
        Err(OpenWriteError::wrap_io_error(
            read_only(),
            path.to_path_buf(),
        ))
    }

    fn atomic_write(&self, _path: &Path, _data: &[u8]) -> io::Result<()> {
        Err(read_only())
    }

    fn sync_directory(&self) -> io::Result<()> {
        // Nothing is written here, so there is nothing to make durable.
        Ok(())
    }
}

/// A reader that follows the processor's commits (it watches `meta.json`).
fn reader_of(index: &Index) -> Result<IndexReader, SearchError> {
    Ok(index
        .reader_builder()
        .reload_policy(ReloadPolicy::OnCommitWithDelay)
        .try_into()?)
}

fn term_query(field: Field, value: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, value),
        IndexRecordOption::Basic,
    ))
}

/// Date terms at full precision: range queries on a fast date field compare µs, not the
/// seconds the inverted index keeps.
fn date_term(field: Field, micros: i64) -> Term {
    Term::from_field_date(field, DateTime::from_timestamp_micros(micros))
}

/// The sort key of every document: `(time µs, log index)`, larger first. Within one
/// partition's index this is a total order, which the cursor relies on.
fn newest_first(segment: &SegmentReader) -> impl FnMut(tantivy::DocId) -> (i64, u64) + use<> {
    let fast = segment.fast_fields();
    let time = fast.date("time").ok();
    let log_index = fast.u64("log_index").ok();
    move |doc| {
        (
            time.as_ref()
                .and_then(|column| column.first(doc))
                .map_or(i64::MIN, |time| time.into_timestamp_micros()),
            log_index
                .as_ref()
                .and_then(|column| column.first(doc))
                .unwrap_or(0),
        )
    }
}

#[cfg(test)]
mod tests;
