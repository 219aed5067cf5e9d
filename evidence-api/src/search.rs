//! Search over the index splits in the object store.
//!
//! The indexers publish each partition's index as immutable splits beside the logs
//! (`callproof_evidence_format::split`). This lists them again at most every
//! `evidence.index_refresh_ms` (on the next search after that, and in the background with
//! [`SearchIndex::prefetch`]), takes each partition's cover
//! (the chain of published splits from entry 0, so no entry is searched twice), downloads the
//! splits it needs into a local cache of its own, bounded by `evidence.index_cache_mb` (least
//! recently used out first), and searches each split, merging the hits by their sort key. Every
//! answer says, per partition, how many log entries it searched (the cover's end).
//!
//! Hits are ordered newest first by `(time, partition, log_index)`, a total order, so a cursor
//! (the key of the last hit of a page) pages without skipping or repeating hits, even among
//! events with the same microsecond, and while new events arrive (they sort before the cursor),
//! and whichever splits (merged or not) hold them.
//!
//! A split written with an older schema (an indexer not yet upgraded) is searched by the
//! fields it has: a query or filter naming a field it lacks finds nothing there.
//!
//! Everything here is blocking (tantivy is; downloads run on the runtime given at open):
//! callers run it in `spawn_blocking`.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callproof_evidence_format::index_schema::IndexFields;
use callproof_evidence_format::split::{SplitId, list_index, open_split};
use object_store::ObjectStore;
use serde::Serialize;
use tantivy::collector::{Count, DocSetCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, Occur, Query, QueryParser, RangeQuery, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, TantivyDocument, Value as _};
use tantivy::tokenizer::TokenizerManager;
use tantivy::{DateTime, DocAddress, ReloadPolicy, Searcher, SegmentReader, Term};

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

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The query or a filter is not valid; the message says why.
    #[error("{0}")]
    BadQuery(String),
    #[error("index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The object store or the local cache failed; the search can be tried again.
    #[error("index splits unavailable: {0}")]
    Unavailable(String),
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
    /// Per partition, how many of its log's entries were searched (`0..n`).
    pub searchable: BTreeMap<i32, u64>,
}

/// One split, downloaded and opened.
struct OpenSplit {
    split: SplitId,
    searcher: Searcher,
    /// Written with this version's schema. A split written before a field was added (an
    /// indexer not yet upgraded) is still searched, by the fields it has.
    current: bool,
}

/// The splits a search reads, and per partition how many log entries they cover.
type Searched = (Vec<Arc<OpenSplit>>, BTreeMap<i32, u64>);

/// What one listing found: each partition's cover and its end.
struct Listing {
    at: Instant,
    covers: BTreeMap<i32, (Vec<SplitId>, u64)>,
    /// The size in bytes of every split of the covers.
    bytes: u64,
}

/// The splits of every partition, from the object store, read-only.
pub struct SearchIndex {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
    refresh: Duration,
    cache: SplitCache,
    fields: IndexFields,
    parser: QueryParser,
    listing: RwLock<Option<Arc<Listing>>>,
}

impl SearchIndex {
    /// Searches the splits in `store`, kept in `cache_dir` (emptied now: it is this process's
    /// own) up to `cache_bytes`, listed again at most every `refresh`. Downloads run on
    /// `runtime`.
    pub fn open(
        store: Arc<dyn ObjectStore>,
        runtime: tokio::runtime::Handle,
        cache_dir: &Path,
        cache_bytes: u64,
        refresh: Duration,
    ) -> Result<SearchIndex, SearchError> {
        let fields = IndexFields::new();
        let mut parser = QueryParser::new(
            fields.schema.clone(),
            fields.default_query_fields(),
            TokenizerManager::default(),
        );
        // An auditor's `refund customer` means both words, as in most search boxes.
        parser.set_conjunction_by_default();
        Ok(SearchIndex {
            store,
            runtime,
            refresh,
            cache: SplitCache::new(cache_dir, cache_bytes)?,
            fields,
            parser,
            listing: RwLock::new(None),
        })
    }

    pub fn fields(&self) -> &IndexFields {
        &self.fields
    }

    /// The cache of downloaded splits.
    pub fn cache(&self) -> &SplitCache {
        &self.cache
    }

    /// Each partition's cover, listed again when the last listing is older than `refresh`.
    fn listing(&self) -> Result<Arc<Listing>, SearchError> {
        if let Ok(guard) = self.listing.read()
            && let Some(listing) = guard.as_ref()
            && listing.at.elapsed() < self.refresh
        {
            return Ok(listing.clone());
        }
        let listed = self
            .runtime
            .block_on(list_index(&self.store))
            .map_err(|error| SearchError::Unavailable(error.to_string()))?;
        let mut bytes = 0;
        let covers = listed
            .into_iter()
            .map(|(partition, listing)| {
                let cover = listing.cover();
                bytes += cover
                    .0
                    .iter()
                    .filter_map(|split| listing.object_bytes(split))
                    .sum::<u64>();
                (partition, cover)
            })
            .collect();
        let listing = Arc::new(Listing {
            at: Instant::now(),
            covers,
            bytes,
        });
        if let Ok(mut guard) = self.listing.write() {
            *guard = Some(listing.clone());
        }
        Ok(listing)
    }

    /// Lists the splits again now, whatever the refresh interval.
    pub fn refresh(&self) -> Result<BTreeMap<i32, u64>, SearchError> {
        self.forget_listing();
        self.searchable()
    }

    fn forget_listing(&self) {
        if let Ok(mut guard) = self.listing.write() {
            *guard = None;
        }
    }

    /// Per partition, how many log entries a search covers now.
    pub fn searchable(&self) -> Result<BTreeMap<i32, u64>, SearchError> {
        Ok(self
            .listing()?
            .covers
            .iter()
            .map(|(partition, (_, end))| (*partition, *end))
            .collect())
    }

    /// The partitions that have splits.
    pub fn partition_ids(&self) -> Result<Vec<i32>, SearchError> {
        Ok(self.listing()?.covers.keys().copied().collect())
    }

    /// Lists the splits if the last listing is older than the refresh interval, and downloads
    /// those not in the cache yet when they all fit in it, newest first, so that a search finds
    /// a new split already here. Returns how many splits the cache holds. Run every refresh
    /// interval by the API.
    pub fn prefetch(&self) -> Result<usize, SearchError> {
        let listing = self.listing()?;
        if listing.bytes <= self.cache.max_bytes {
            // Newest first: the splits most searches read, and the ones not fetched yet.
            let mut newest_first: Vec<&SplitId> = listing
                .covers
                .values()
                .flat_map(|(cover, _)| cover.iter())
                .collect();
            newest_first.sort_by_key(|split| std::cmp::Reverse(split.end));
            for split in newest_first {
                self.cache
                    .open(&self.store, &self.runtime, split, &self.fields)?;
            }
        }
        Ok(self.cache.len())
    }

    /// Every split to search, opened (downloaded first if need be), and what they cover.
    fn splits(&self) -> Result<Searched, SearchError> {
        let listing = self.listing()?;
        let mut splits = Vec::new();
        let mut searchable = BTreeMap::new();
        for (partition, (cover, end)) in &listing.covers {
            for split in cover {
                match self
                    .cache
                    .open(&self.store, &self.runtime, split, &self.fields)
                {
                    Ok(opened) => splits.push(opened),
                    Err(error) => {
                        // The listing may be older than the split's removal (a reader that
                        // slept past the grace period): the next search lists again.
                        self.forget_listing();
                        return Err(error);
                    }
                }
            }
            searchable.insert(*partition, *end);
        }
        Ok((splits, searchable))
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
        let (splits, searchable) = self.splits()?;
        let mut keyed: Vec<(Cursor, usize, DocAddress)> = Vec::new();
        for (position, split) in splits.iter().enumerate() {
            let partition = split.split.partition;
            let Some(query) = self.split_query(filter, query.as_ref(), split)? else {
                continue;
            };
            let query: Box<dyn Query> = match cursor {
                None => query,
                Some(cursor) => match self.after_cursor(partition, cursor) {
                    None => continue,
                    Some(after) => Box::new(BooleanQuery::new(vec![
                        (Occur::Must, query),
                        (Occur::Must, after),
                    ])),
                },
            };
            // One more than a page, to know whether another page follows.
            let top = split.searcher.search(
                &query,
                &TopDocs::with_limit(limit + 1).order_by(newest_first),
            )?;
            for ((time_micros, log_index), address) in top {
                let key = Cursor {
                    time_micros,
                    partition,
                    log_index,
                };
                keyed.push((key, position, address));
            }
        }
        keyed.sort_by_key(|keyed| std::cmp::Reverse(keyed.0));
        let more = keyed.len() > limit;
        keyed.truncate(limit);
        let mut hits = Vec::with_capacity(keyed.len());
        for (_, position, address) in keyed {
            hits.push(self.event(&splits[position].searcher, address)?);
        }
        let next_cursor = if more {
            hits.last().map(IndexedEvent::key)
        } else {
            None
        };
        Ok(SearchPage {
            hits,
            next_cursor,
            searchable,
        })
    }

    /// Every matching event, in no particular order (reports and exports).
    pub fn scan(&self, filter: &Filter) -> Result<Vec<IndexedEvent>, SearchError> {
        let query = self.query(filter)?;
        let mut events = Vec::new();
        for split in self.splits()?.0 {
            let Some(query) = self.split_query(filter, query.as_ref(), &split)? else {
                continue;
            };
            for address in split.searcher.search(&query, &DocSetCollector)? {
                events.push(self.event(&split.searcher, address)?);
            }
        }
        Ok(events)
    }

    /// How many events match.
    pub fn count(&self, filter: &Filter) -> Result<usize, SearchError> {
        let query = self.query(filter)?;
        let mut total = 0;
        for split in self.splits()?.0 {
            if let Some(query) = self.split_query(filter, query.as_ref(), &split)? {
                total += split.searcher.search(&query, &Count)?;
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

    /// The query to run over one split: `query` (the filter's, validated) where the split
    /// has this version's schema; else the filter's query built again over the split's own
    /// schema, or `None` when it names a field that split lacks, none of whose documents can
    /// then match. Building `query` over such a split would name a field id past its schema,
    /// which tantivy answers with a panic.
    fn split_query(
        &self,
        filter: &Filter,
        query: &dyn Query,
        split: &OpenSplit,
    ) -> Result<Option<Box<dyn Query>>, SearchError> {
        if split.current {
            return Ok(Some(query.box_clone()));
        }
        let schema = split.searcher.schema().clone();
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

/// The query string of a filter, if it says anything.
fn query_text(filter: &Filter) -> Option<&str> {
    filter
        .query
        .as_deref()
        .filter(|text| !text.trim().is_empty())
}

/// The splits downloaded from the store, at most `max_bytes` of them on disk between
/// searches: the least recently used go first. A search holds the splits it reads open (their
/// files stay readable once deleted, until it ends), so a search over more than the bound still
/// completes. The directory is this process's own: never shared with another process.
pub struct SplitCache {
    dir: PathBuf,
    max_bytes: u64,
    entries: Mutex<CacheEntries>,
}

#[derive(Default)]
struct CacheEntries {
    by_name: HashMap<String, CacheEntry>,
    tick: u64,
    bytes: u64,
}

struct CacheEntry {
    split: Arc<OpenSplit>,
    path: PathBuf,
    bytes: u64,
    used: u64,
}

impl SplitCache {
    /// Creates `dir` and empties it (splits of a previous run are downloaded again if needed).
    pub fn new(dir: &Path, max_bytes: u64) -> Result<SplitCache, SearchError> {
        let unavailable =
            |error: std::io::Error| SearchError::Unavailable(format!("{}: {error}", dir.display()));
        std::fs::create_dir_all(dir).map_err(unavailable)?;
        for entry in std::fs::read_dir(dir).map_err(unavailable)?.flatten() {
            if entry
                .path()
                .extension()
                .is_some_and(|ext| ext == "split" || ext == "part")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(SplitCache {
            dir: dir.to_path_buf(),
            max_bytes,
            entries: Mutex::new(CacheEntries::default()),
        })
    }

    /// Bytes of splits on disk now.
    pub fn bytes(&self) -> u64 {
        self.entries
            .lock()
            .map(|entries| entries.bytes)
            .unwrap_or(0)
    }

    /// How many splits are on disk now.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .map(|entries| entries.by_name.len())
            .unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The split opened, from the cache or downloaded now.
    fn open(
        &self,
        store: &Arc<dyn ObjectStore>,
        runtime: &tokio::runtime::Handle,
        split: &SplitId,
        fields: &IndexFields,
    ) -> Result<Arc<OpenSplit>, SearchError> {
        let name = format!("{}-{}", split.partition, split.name());
        if let Ok(mut entries) = self.entries.lock() {
            entries.tick += 1;
            let tick = entries.tick;
            if let Some(entry) = entries.by_name.get_mut(&name) {
                entry.used = tick;
                metrics::counter!("callproof_evidence_split_cache_total", "result" => "hit")
                    .increment(1);
                return Ok(entry.split.clone());
            }
        }
        metrics::counter!("callproof_evidence_split_cache_total", "result" => "miss").increment(1);
        let unavailable = |reason: String| SearchError::Unavailable(reason);
        // Downloaded under a name of its own, then renamed: a search beside this one never
        // opens a half-written file.
        let part = self.dir.join(format!(
            "{name}.{}.part",
            std::process::id() as u64 ^ rand_suffix()
        ));
        let object = split.object_path();
        let bytes = runtime
            .block_on(async {
                let result = store.get(&object).await?;
                result.bytes().await
            })
            .map_err(|error| unavailable(format!("{object}: {error}")))?;
        std::fs::write(&part, &bytes)
            .map_err(|error| unavailable(format!("{}: {error}", part.display())))?;
        let path = self.dir.join(format!("{name}.split"));
        std::fs::rename(&part, &path)
            .map_err(|error| unavailable(format!("{}: {error}", path.display())))?;
        let (index, _manifest) =
            open_split(&path, split).map_err(|error| unavailable(error.to_string()))?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let reader: tantivy::IndexReader = reader;
        let opened = Arc::new(OpenSplit {
            split: split.clone(),
            current: index.schema() == fields.schema,
            searcher: reader.searcher(),
        });
        let mut entries = self
            .entries
            .lock()
            .map_err(|_| unavailable("the split cache is poisoned".into()))?;
        entries.tick += 1;
        let tick = entries.tick;
        if let Some(entry) = entries.by_name.get_mut(&name) {
            // Another search downloaded it meanwhile (to the same path, renamed over).
            entry.used = tick;
            return Ok(entry.split.clone());
        }
        entries.bytes += bytes.len() as u64;
        entries.by_name.insert(
            name.clone(),
            CacheEntry {
                split: opened.clone(),
                path,
                bytes: bytes.len() as u64,
                used: tick,
            },
        );
        // Least recently used out, never the one just opened.
        while entries.bytes > self.max_bytes {
            let Some(oldest) = entries
                .by_name
                .iter()
                .filter(|(key, _)| **key != name)
                .min_by_key(|(_, entry)| entry.used)
                .map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some(entry) = entries.by_name.remove(&oldest) {
                entries.bytes -= entry.bytes;
                if let Err(error) = std::fs::remove_file(&entry.path) {
                    tracing::warn!(path = %entry.path.display(), %error, "cannot remove a split from the cache");
                }
                metrics::counter!("callproof_evidence_split_cache_evictions_total").increment(1);
            }
        }
        metrics::gauge!("callproof_evidence_split_cache_bytes").set(entries.bytes as f64);
        Ok(opened)
    }
}

/// A few random bits for a temporary file name, without a random number generator.
fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
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
/// partition's index this is a total order, which the cursor relies on. Public for the search
/// bench, whose local-index baseline sorts the same way.
pub fn newest_first(segment: &SegmentReader) -> impl FnMut(tantivy::DocId) -> (i64, u64) + use<> {
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
