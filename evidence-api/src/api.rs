//! Handlers of search, replay, proofs, checkpoints, integrity and the raw tlog-tiles paths.
//! Every one takes an [`Auditor`], so none runs for an unauthenticated caller.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use callproof_tlog::hash::{leaf_hash, to_base64};
use callproof_tlog::proof::format_consistency_proof;
use callproof_tlog::tile::{TilePath, parse_tile_path};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::Auditor;
use crate::error::ApiError;
use crate::search::{Cursor, Filter, IndexedEvent, SearchError};
use crate::time_param::{format_micros, parse_micros};
use crate::{AppState, timeline};

type AppResult<T> = Result<T, ApiError>;

/// The reason axum gives for a query string it cannot read, as a 400 of ours.
pub fn bad_query(rejection: QueryRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

fn bad_path(rejection: PathRejection) -> ApiError {
    ApiError::BadRequest(rejection.body_text())
}

pub fn search_error(error: SearchError) -> ApiError {
    match error {
        SearchError::BadQuery(reason) => ApiError::BadRequest(reason),
        SearchError::Index(error) => ApiError::internal(error),
        SearchError::Unavailable(reason) => {
            tracing::warn!(%reason, "index splits unavailable");
            ApiError::Unavailable("the search index cannot be read now; try again".into())
        }
    }
}

/// `GET /v1/search` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub q: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub principal: Option<String>,
    pub group: Option<String>,
    pub agent: Option<String>,
    pub function: Option<String>,
    pub kind: Option<String>,
    pub decision: Option<String>,
    pub detector: Option<String>,
    pub reviewer: Option<String>,
    pub call_id: Option<String>,
    pub mcp_server: Option<String>,
    pub mcp_tool: Option<String>,
    pub mcp_outcome: Option<String>,
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

impl SearchParams {
    pub fn filter(&self) -> AppResult<Filter> {
        Ok(Filter {
            query: self.q.clone(),
            from_micros: self
                .from
                .as_deref()
                .map(|v| parse_micros("from", v))
                .transpose()?,
            to_micros: self
                .to
                .as_deref()
                .map(|v| parse_micros("to", v))
                .transpose()?,
            subject: self.principal.clone(),
            group: self.group.clone(),
            agent: self.agent.clone(),
            function: self.function.clone(),
            kind: self.kind.clone(),
            decision: self.decision.clone(),
            detector: self.detector.clone(),
            reviewer: self.reviewer.clone(),
            call_id: self.call_id.clone(),
            mcp_server: self.mcp_server.clone(),
            mcp_tool: self.mcp_tool.clone(),
            mcp_outcome: self.mcp_outcome.clone(),
        })
    }
}

/// A search link for a filter, as the report uses them.
pub fn search_link(app: &AppState, pairs: &[(&str, &str)]) -> String {
    let query: Vec<String> = pairs
        .iter()
        .map(|(key, value)| format!("{key}={}", callproof_report::url_encode(value)))
        .collect();
    app.link(&format!("/v1/search?{}", query.join("&")))
}

/// One hit as the API shows it.
pub fn hit_json(app: &AppState, hit: &IndexedEvent) -> Value {
    json!({
        "time": format_micros(hit.time_micros),
        "partition": hit.partition,
        "log_index": hit.log_index,
        "event_id": hit.event_id,
        "call_id": hit.call_id,
        "kind": hit.kind,
        "principal": hit.subject,
        "groups": hit.groups,
        "agent": hit.agent,
        "function": hit.function,
        "decision": hit.decision,
        "reviewer": hit.reviewer,
        "detectors": hit.detectors,
        "status": hit.status,
        "proof": app.link(&format!("/v1/proofs/{}/{}", hit.partition, hit.log_index)),
        "call": hit.call_id.as_deref().map(|id| app.link(&format!("/v1/calls/{}", callproof_report::url_encode(id)))),
    })
}

#[tracing::instrument(skip_all, fields(auditor = %auditor.subject))]
pub async fn search(
    auditor: Auditor,
    State(app): State<Arc<AppState>>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let Query(params) = params.map_err(bad_query)?;
    let filter = params.filter()?;
    let limit = params.limit.unwrap_or(50);
    if limit == 0 || limit > app.max_page_size {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and {}",
            app.max_page_size
        )));
    }
    let cursor = params
        .cursor
        .as_deref()
        .map(Cursor::decode)
        .transpose()
        .map_err(search_error)?;
    let index = app.index.clone();
    let page = tokio::task::spawn_blocking(move || index.search(&filter, limit, cursor))
        .await?
        .map_err(search_error)?;
    let hits: Vec<Value> = page.hits.iter().map(|hit| hit_json(&app, hit)).collect();
    let next = page.next_cursor.map(|cursor| {
        let token = cursor.encode();
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        let fields = [
            ("q", &params.q),
            ("from", &params.from),
            ("to", &params.to),
            ("principal", &params.principal),
            ("group", &params.group),
            ("agent", &params.agent),
            ("function", &params.function),
            ("kind", &params.kind),
            ("decision", &params.decision),
            ("detector", &params.detector),
            ("reviewer", &params.reviewer),
            ("call_id", &params.call_id),
            ("mcp_server", &params.mcp_server),
            ("mcp_tool", &params.mcp_tool),
            ("mcp_outcome", &params.mcp_outcome),
        ];
        for (key, value) in &fields {
            if let Some(value) = value {
                pairs.push((key, value));
            }
        }
        let limit = limit.to_string();
        pairs.push(("limit", &limit));
        pairs.push(("cursor", &token));
        (token.clone(), search_link(&app, &pairs))
    });
    // Per partition, how many log entries the search covered: events logged beyond are not
    // searchable yet (the indexer follows the log).
    let searchable: serde_json::Map<String, Value> = page
        .searchable
        .iter()
        .map(|(partition, size)| (partition.to_string(), json!(size)))
        .collect();
    Ok(Json(json!({
        "hits": hits,
        "next_cursor": next.as_ref().map(|(token, _)| token),
        "next": next.as_ref().map(|(_, link)| link),
        "searchable": searchable,
    })))
}

#[tracing::instrument(skip_all, fields(auditor = %auditor.subject))]
pub async fn call_timeline(
    auditor: Auditor,
    State(app): State<Arc<AppState>>,
    call_id: Result<Path<String>, PathRejection>,
) -> AppResult<Json<timeline::Timeline>> {
    let Path(call_id) = call_id.map_err(bad_path)?;
    Ok(Json(timeline::timeline(&app, &call_id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofParams {
    /// Prove inclusion in this kept checkpoint instead of the latest.
    pub checkpoint: Option<u64>,
}

/// The entry and its proof, in the checkpoint asked for (the latest by default).
async fn proof_parts(
    app: &AppState,
    partition: i32,
    index: u64,
    checkpoint_size: Option<u64>,
) -> AppResult<(Vec<u8>, callproof_tlog::proof::TlogProof)> {
    let latest = app.logs.checkpoint(partition).await?;
    let tiles_size = latest.checkpoint.size;
    let checkpoint = match checkpoint_size {
        None => latest,
        Some(size) if size == tiles_size => latest,
        Some(size) => app.logs.kept_checkpoint(partition, size).await?,
    };
    let size = checkpoint.checkpoint.size;
    if index >= size {
        return Err(ApiError::NotFound(format!(
            "partition {partition} has no entry {index} in the checkpoint of size {size}"
        )));
    }
    let (entry, _) = app.logs.entry(partition, index, tiles_size).await?;
    let proof = app
        .logs
        .tlog_proof(partition, index, &checkpoint, tiles_size)
        .await?;
    Ok((entry, proof))
}

/// `GET /v1/proofs/{partition}/{index}`: the entry, its `c2sp.org/tlog-proof@v1` proof and links
/// to both as files (what `callproof-verify proof` takes).
#[tracing::instrument(skip_all, fields(auditor = %auditor.subject))]
pub async fn proof(
    auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<(i32, u64)>, PathRejection>,
    params: Result<Query<ProofParams>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let Path((partition, index)) = path.map_err(bad_path)?;
    let Query(params) = params.map_err(bad_query)?;
    let (entry, proof) = proof_parts(&app, partition, index, params.checkpoint).await?;
    let resolved = app.logs.resolve(partition, index, &entry).await.ok();
    let base = format!("/v1/proofs/{partition}/{index}");
    let suffix = params
        .checkpoint
        .map(|size| format!("?checkpoint={size}"))
        .unwrap_or_default();
    Ok(Json(json!({
        "partition": partition,
        "index": index,
        "entry_base64": STANDARD.encode(&entry),
        "entry": resolved,
        "leaf_hash": to_base64(&leaf_hash(&entry)),
        "format": callproof_tlog::proof::TLOG_PROOF_HEADER,
        "proof": String::from_utf8_lossy(&proof.to_bytes()),
        "links": {
            "proof_file": app.link(&format!("{base}/proof{suffix}")),
            "entry_file": app.link(&format!("{base}/entry")),
            "checkpoint": app.link(&format!("/logs/{partition}/checkpoint")),
            "key": app.link("/v1/key"),
        },
    })))
}

/// `GET /v1/proofs/{partition}/{index}/proof`: the tlog-proof file, byte for byte.
pub async fn proof_file(
    _auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<(i32, u64)>, PathRejection>,
    params: Result<Query<ProofParams>, QueryRejection>,
) -> AppResult<Response> {
    let Path((partition, index)) = path.map_err(bad_path)?;
    let Query(params) = params.map_err(bad_query)?;
    let (_, proof) = proof_parts(&app, partition, index, params.checkpoint).await?;
    Ok(bytes_response(
        proof.to_bytes(),
        "text/plain; charset=utf-8",
        false,
    ))
}

/// `GET /v1/proofs/{partition}/{index}/entry`: the entry, byte for byte.
pub async fn entry_file(
    _auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<(i32, u64)>, PathRejection>,
) -> AppResult<Response> {
    let Path((partition, index)) = path.map_err(bad_path)?;
    let size = app.logs.checkpoint(partition).await?.checkpoint.size;
    if index >= size {
        return Err(ApiError::NotFound(format!(
            "partition {partition} has no entry {index} (size {size})"
        )));
    }
    let (entry, _) = app.logs.entry(partition, index, size).await?;
    Ok(bytes_response(entry, "application/octet-stream", true))
}

/// `GET /v1/logs`: every partition's latest checkpoint.
pub async fn logs(_auditor: Auditor, State(app): State<Arc<AppState>>) -> AppResult<Json<Value>> {
    let mut partitions = Vec::new();
    for partition in app.logs.partitions().await? {
        let checkpoint = app.logs.checkpoint(partition).await?;
        partitions.push(json!({
            "partition": partition,
            "origin": checkpoint.checkpoint.origin,
            "size": checkpoint.checkpoint.size,
            "root_hash": to_base64(&checkpoint.checkpoint.root_hash),
            "checkpoint": String::from_utf8_lossy(&checkpoint.note),
            "links": {
                "checkpoint": app.link(&format!("/logs/{partition}/checkpoint")),
                "checkpoints": app.link(&format!("/v1/logs/{partition}/checkpoints")),
            },
        }));
    }
    Ok(Json(json!({
        "verifier_key": app.logs.verifier_key(),
        "partitions": partitions,
    })))
}

/// `GET /v1/logs/{partition}/checkpoints`: the latest and every kept checkpoint.
pub async fn checkpoints(
    _auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<i32>, PathRejection>,
) -> AppResult<Json<Value>> {
    let Path(partition) = path.map_err(bad_path)?;
    let latest = app.logs.checkpoint(partition).await?;
    let mut kept = Vec::new();
    for size in app.logs.kept_sizes(partition).await? {
        let checkpoint = app.logs.kept_checkpoint(partition, size).await?;
        kept.push(json!({
            "size": size,
            "root_hash": to_base64(&checkpoint.checkpoint.root_hash),
            "checkpoint": String::from_utf8_lossy(&checkpoint.note),
            "link": app.link(&format!("/logs/{partition}/checkpoints/{size}")),
        }));
    }
    Ok(Json(json!({
        "partition": partition,
        "latest": {
            "size": latest.checkpoint.size,
            "root_hash": to_base64(&latest.checkpoint.root_hash),
            "checkpoint": String::from_utf8_lossy(&latest.note),
        },
        "kept": kept,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyParams {
    pub old: u64,
    /// The latest size by default.
    pub new: Option<u64>,
    /// `text`: the proof file `callproof-verify consistency` takes (one base64 hash a line).
    pub format: Option<String>,
}

/// `GET /v1/logs/{partition}/consistency?old=&new=`: the proof that the tree of `old` entries
/// is a prefix of the tree of `new`, with the kept checkpoints of both sizes when they exist.
pub async fn consistency(
    _auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<i32>, PathRejection>,
    params: Result<Query<ConsistencyParams>, QueryRejection>,
) -> AppResult<Response> {
    let Path(partition) = path.map_err(bad_path)?;
    let Query(params) = params.map_err(bad_query)?;
    let latest = app.logs.checkpoint(partition).await?;
    let tiles_size = latest.checkpoint.size;
    let new = params.new.unwrap_or(tiles_size);
    if params.old > new || new > tiles_size {
        return Err(ApiError::BadRequest(format!(
            "need `old` <= `new` <= {tiles_size} (the log's size), got old={} new={new}",
            params.old
        )));
    }
    let hashes = if params.old == 0 || params.old == new {
        Vec::new()
    } else {
        app.logs
            .reader(partition)
            .consistency_proof(params.old, new, tiles_size)
            .await
            .map_err(ApiError::from)?
    };
    let text = format_consistency_proof(&hashes);
    match params.format.as_deref() {
        Some("text") => {
            return Ok(bytes_response(
                text.into_bytes(),
                "text/plain; charset=utf-8",
                true,
            ));
        }
        None | Some("json") => {}
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`format` must be `json` or `text`, not {other:?}"
            )));
        }
    }
    let note_of = |size: u64| {
        let app = app.clone();
        let latest_note = latest.note.clone();
        async move {
            if size == tiles_size {
                return Some(String::from_utf8_lossy(&latest_note).into_owned());
            }
            app.logs
                .kept_checkpoint(partition, size)
                .await
                .ok()
                .map(|checkpoint| String::from_utf8_lossy(&checkpoint.note).into_owned())
        }
    };
    Ok(Json(json!({
        "partition": partition,
        "old_size": params.old,
        "new_size": new,
        "proof": hashes.iter().map(to_base64).collect::<Vec<_>>(),
        "old_checkpoint": note_of(params.old).await,
        "new_checkpoint": note_of(new).await,
        "proof_file": app.link(&format!("/v1/logs/{partition}/consistency?old={}&new={new}&format=text", params.old)),
    }))
    .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityParams {
    pub partition: Option<i32>,
}

/// `GET /v1/integrity[?partition=]`: verifies the logs as stored, now.
#[tracing::instrument(skip_all, fields(auditor = %auditor.subject))]
pub async fn integrity(
    auditor: Auditor,
    State(app): State<Arc<AppState>>,
    params: Result<Query<IntegrityParams>, QueryRejection>,
) -> AppResult<Json<Value>> {
    let Query(params) = params.map_err(bad_query)?;
    let partitions = match params.partition {
        Some(partition) => vec![partition],
        None => app.logs.partitions().await?,
    };
    let mut results = Vec::new();
    for partition in partitions {
        results.push(app.logs.verify_partition(partition).await);
    }
    Ok(Json(json!({
        "valid": results.iter().all(|result| result.valid),
        "checked_at": format_micros(crate::time_param::now_micros()),
        "partitions": results,
    })))
}

/// `GET /v1/key`: the logs' verifier key, for `callproof-verify --key`.
pub async fn verifier_key(_auditor: Auditor, State(app): State<Arc<AppState>>) -> Response {
    bytes_response(
        format!("{}\n", app.logs.verifier_key()).into_bytes(),
        "text/plain; charset=utf-8",
        false,
    )
}

/// `GET /logs/{partition}/checkpoint`, exactly as stored (a tlog client checks it itself).
pub async fn raw_checkpoint(
    _auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<i32>, PathRejection>,
) -> AppResult<Response> {
    let Path(partition) = path.map_err(bad_path)?;
    raw(&app, partition, "checkpoint", false).await
}

/// `GET /logs/{partition}/checkpoints/{size}`.
pub async fn raw_kept_checkpoint(
    _auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<(i32, u64)>, PathRejection>,
) -> AppResult<Response> {
    let Path((partition, size)) = path.map_err(bad_path)?;
    raw(&app, partition, &format!("checkpoints/{size}"), true).await
}

/// `GET /logs/{partition}/tile/...`: hash tiles and entry bundles at their C2SP paths. Only
/// paths the tlog-tiles grammar accepts are read, so no other object can be reached.
pub async fn raw_tile(
    _auditor: Auditor,
    State(app): State<Arc<AppState>>,
    path: Result<Path<(i32, String)>, PathRejection>,
) -> AppResult<Response> {
    let Path((partition, rest)) = path.map_err(bad_path)?;
    let relative = format!("tile/{rest}");
    let parsed = parse_tile_path(&relative)
        .map_err(|error| ApiError::BadRequest(format!("not a tlog-tiles path: {error}")))?;
    let full = match parsed {
        TilePath::Hashes(tile) => tile.is_full(),
        TilePath::Entries { width, .. } => width == callproof_tlog::tile::TILE_WIDTH,
    };
    raw(&app, partition, &relative, full).await
}

async fn raw(
    app: &AppState,
    partition: i32,
    relative: &str,
    immutable: bool,
) -> AppResult<Response> {
    let bytes =
        app.logs.raw(partition, relative).await?.ok_or_else(|| {
            ApiError::NotFound(format!("logs/{partition}/{relative} does not exist"))
        })?;
    let content_type = if relative.starts_with("tile/") {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    };
    Ok(bytes_response(bytes, content_type, immutable))
}

/// Full tiles and kept checkpoints never change (tlog-tiles says clients may cache them for
/// good); the latest checkpoint and partial tiles must be fetched again.
fn bytes_response(bytes: Vec<u8>, content_type: &'static str, immutable: bool) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if immutable {
            "private, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    response
}
