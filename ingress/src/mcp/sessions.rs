//! Sessions of legacy-era agents (2025-06-18, 2025-11-25), and the gateway's connections to
//! upstream servers on each agent's behalf.
//!
//! A session id is 256 random bits and a bearer handle, so it is bound to the identity that
//! opened it: every request authenticates again and must be the same caller, or the session is
//! "not found" (indistinguishable from one that never existed). Ids are never recorded; events
//! carry a hash.
//!
//! Upstream connections are per agent session (legacy) or per caller identity (2026-07-28, which
//! has no sessions), and per server: no upstream session, request id, progress token or
//! server-to-client message is ever shared by two agents.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callproof_schemas::Principal;
use rand::RngCore;
use rmcp::model::ProtocolVersion;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::Server;
use super::upstream::{Upstream, UpstreamError};

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Who is calling, as far as sessions and upstream connections are concerned: issuer, subject,
/// acting agent and client. Two requests share a session only if all four agree.
pub fn identity(principal: &Principal) -> String {
    let actor = principal
        .actor
        .as_ref()
        .map(|actor| actor.subject.as_str())
        .unwrap_or_default();
    let client = principal.client_id.as_deref().unwrap_or_default();
    // Length-prefixed: no value can imitate a separator.
    [principal.issuer.as_str(), &principal.subject, actor, client]
        .iter()
        .map(|part| format!("{}:{part}", part.len()))
        .collect::<Vec<_>>()
        .join("|")
}

/// What events record of a session id: the first 16 hex digits of its SHA-256.
pub fn session_hash(id: &str) -> String {
    let digest = Sha256::digest(id.as_bytes());
    digest
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub struct Session {
    identity: String,
    pub protocol_version: String,
    /// `clientInfo` as `name/version`, self-reported.
    pub client: Option<String>,
    last_seen: Instant,
    /// Calls in flight by JSON-RPC id, for `notifications/cancelled`.
    in_flight: HashMap<String, CancellationToken>,
}

pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    idle: Duration,
    max_per_caller: usize,
}

impl Sessions {
    pub fn new(idle: Duration, max_per_caller: usize) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            max_per_caller,
        }
    }

    /// Opens a session for `principal`; returns its id and the id of a session it ended to stay
    /// within the caller's limit.
    pub fn open(
        &self,
        principal: &Principal,
        protocol_version: &str,
        client: Option<String>,
    ) -> (String, Option<String>) {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        let id = URL_SAFE_NO_PAD.encode(bytes);
        let identity = identity(principal);
        let mut map = lock(&self.map);
        let mine: Vec<(&String, Instant)> = map
            .iter()
            .filter(|(_, session)| session.identity == identity)
            .map(|(id, session)| (id, session.last_seen))
            .collect();
        let evicted = (mine.len() >= self.max_per_caller)
            .then(|| {
                mine.iter()
                    .min_by_key(|(_, seen)| *seen)
                    .map(|(id, _)| (*id).clone())
            })
            .flatten();
        if let Some(session) = evicted.as_ref().and_then(|evicted| map.remove(evicted)) {
            session
                .in_flight
                .values()
                .for_each(CancellationToken::cancel);
        }
        map.insert(
            id.clone(),
            Session {
                identity,
                protocol_version: protocol_version.to_string(),
                client,
                last_seen: Instant::now(),
                in_flight: HashMap::new(),
            },
        );
        metrics::gauge!("callproof_mcp_sessions").set(map.len() as f64);
        (id, evicted)
    }

    /// The session's negotiated version and client, if `id` is a live session of `principal`.
    pub fn touch(&self, id: &str, principal: &Principal) -> Option<(String, Option<String>)> {
        let mut map = lock(&self.map);
        let session = map.get_mut(id)?;
        if session.identity != identity(principal) || session.last_seen.elapsed() > self.idle {
            return None;
        }
        session.last_seen = Instant::now();
        Some((session.protocol_version.clone(), session.client.clone()))
    }

    /// Ends `id` if it is `principal`'s: its calls in flight are cancelled.
    pub fn end(&self, id: &str, principal: &Principal) -> bool {
        let mut map = lock(&self.map);
        if map
            .get(id)
            .is_none_or(|session| session.identity != identity(principal))
        {
            return false;
        }
        if let Some(session) = map.remove(id) {
            session
                .in_flight
                .values()
                .for_each(CancellationToken::cancel);
        }
        metrics::gauge!("callproof_mcp_sessions").set(map.len() as f64);
        true
    }

    /// Ends sessions idle too long; returns their ids.
    pub fn end_idle(&self) -> Vec<String> {
        let mut map = lock(&self.map);
        let idle: Vec<String> = map
            .iter()
            .filter(|(_, session)| session.last_seen.elapsed() > self.idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &idle {
            if let Some(session) = map.remove(id) {
                session
                    .in_flight
                    .values()
                    .for_each(CancellationToken::cancel);
            }
        }
        metrics::gauge!("callproof_mcp_sessions").set(map.len() as f64);
        idle
    }

    pub fn track(&self, id: &str, request: &str, cancel: &CancellationToken) {
        if let Some(session) = lock(&self.map).get_mut(id) {
            session
                .in_flight
                .insert(request.to_string(), cancel.clone());
        }
    }

    pub fn untrack(&self, id: &str, request: &str) {
        if let Some(session) = lock(&self.map).get_mut(id) {
            session.in_flight.remove(request);
        }
    }

    /// `notifications/cancelled`: cancels `request` of this session only; an unknown or finished
    /// id is ignored, as the specification asks.
    pub fn cancel(&self, id: &str, request: &str) {
        if let Some(token) = lock(&self.map)
            .get(id)
            .and_then(|session| session.in_flight.get(request))
        {
            token.cancel();
        }
    }
}

/// Upstream connections by (owner, server), where the owner is an agent session or a caller
/// identity.
///
/// An owner may have several connections to one server, up to [`MAX_CONNECTIONS_PER_OWNER`]: rmcp's
/// client sends a connection's next request only once the previous one's JSON answer has fully
/// arrived, so with a single connection one slow tool call would hold up every other call of the
/// same agent. A call takes an idle connection, else opens another, else shares the least busy.
pub struct Clients {
    map: Mutex<HashMap<(String, String), Entry>>,
    idle: Duration,
}

/// Connections one owner may have open to one server.
pub const MAX_CONNECTIONS_PER_OWNER: usize = 8;

struct Entry {
    slots: Vec<Arc<Slot>>,
    last_used: Instant,
}

#[derive(Default)]
struct Slot {
    connection: OnceCell<Arc<Upstream>>,
    /// Calls using it now.
    busy: AtomicUsize,
}

/// A connection lent to one call; it counts as busy until dropped.
pub struct Lease {
    slot: Arc<Slot>,
    pub upstream: Arc<Upstream>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.slot.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Clients {
    pub fn new(idle: Duration) -> Clients {
        Clients {
            map: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// A connection of `owner` to `server` for one call, connecting when a new one is needed.
    pub async fn get(&self, owner: &str, server: &Server) -> Result<Lease, UpstreamError> {
        let key = (owner.to_string(), server.name.clone());
        let slot = {
            let mut map = lock(&self.map);
            let entry = map.entry(key.clone()).or_insert_with(|| Entry {
                slots: Vec::new(),
                last_used: Instant::now(),
            });
            entry.last_used = Instant::now();
            let idle = entry
                .slots
                .iter()
                .find(|slot| slot.busy.load(Ordering::Relaxed) == 0)
                .cloned();
            let slot = match idle {
                Some(slot) => slot,
                None if entry.slots.len() < MAX_CONNECTIONS_PER_OWNER => {
                    let slot = Arc::new(Slot::default());
                    entry.slots.push(slot.clone());
                    slot
                }
                None => entry
                    .slots
                    .iter()
                    .min_by_key(|slot| slot.busy.load(Ordering::Relaxed))
                    .cloned()
                    .unwrap_or_default(),
            };
            slot.busy.fetch_add(1, Ordering::Relaxed);
            slot
        };
        let connected = slot
            .connection
            .get_or_try_init(|| async {
                let upstream =
                    Upstream::connect(server.http.clone(), server.upstream.clone()).await?;
                // rmcp sends a stateless upstream the `Mcp-Param-*` headers its tools ask for
                // only for tools this connection has listed itself; without them the upstream
                // refuses such calls.
                if upstream.protocol_version() == Some(ProtocolVersion::V_2026_07_28) {
                    upstream.list_tools().await?;
                }
                Ok(Arc::new(upstream))
            })
            .await
            .cloned();
        match connected {
            Ok(upstream) => Ok(Lease { slot, upstream }),
            Err(error) => {
                slot.busy.fetch_sub(1, Ordering::Relaxed);
                if let Some(entry) = lock(&self.map).get_mut(&key) {
                    entry.slots.retain(|other| !Arc::ptr_eq(other, &slot));
                }
                Err(error)
            }
        }
    }

    /// Forgets the connections of `owner` to `server` after one failed, so the next call
    /// connects again; calls still using them finish on them.
    pub fn drop_connection(&self, owner: &str, server: &str) {
        lock(&self.map).remove(&(owner.to_string(), server.to_string()));
    }

    /// Closes the connections of ended sessions (legacy upstreams get a DELETE).
    pub async fn close_sessions(&self, owners: &[String]) {
        let closing: Vec<Entry> = {
            let mut map = lock(&self.map);
            let keys: Vec<_> = map
                .keys()
                .filter(|(owner, _)| owners.contains(owner))
                .cloned()
                .collect();
            keys.iter().filter_map(|key| map.remove(key)).collect()
        };
        close(closing).await;
    }

    pub async fn close_idle(&self) {
        let closing: Vec<Entry> = {
            let mut map = lock(&self.map);
            let keys: Vec<_> = map
                .iter()
                .filter(|(_, entry)| entry.last_used.elapsed() > self.idle)
                .map(|(key, _)| key.clone())
                .collect();
            keys.iter().filter_map(|key| map.remove(key)).collect()
        };
        close(closing).await;
    }
}

async fn close(entries: Vec<Entry>) {
    for slot in entries.into_iter().flat_map(|entry| entry.slots) {
        // A call still using it keeps its own reference; the last one to let go closes nothing,
        // and rmcp's task ends with the last handle.
        if let Some(connection) = Arc::into_inner(slot)
            .and_then(|slot| slot.connection.into_inner())
            .and_then(Arc::into_inner)
        {
            connection.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(subject: &str, actor: Option<&str>) -> Principal {
        Principal {
            issuer: "https://issuer.example".into(),
            subject: subject.into(),
            email: None,
            groups: vec![],
            client_id: None,
            actor: actor.map(|subject| callproof_schemas::Actor {
                subject: subject.into(),
                issuer: None,
                client_id: None,
            }),
            authentication: None,
        }
    }

    #[test]
    fn a_session_serves_only_the_identity_that_opened_it() {
        let sessions = Sessions::new(Duration::from_secs(60), 4);
        let alice = principal("alice", Some("agent-a"));
        let (id, _) = sessions.open(&alice, "2025-11-25", None);
        assert!(sessions.touch(&id, &alice).is_some());
        assert!(
            sessions
                .touch(&id, &principal("bob", Some("agent-a")))
                .is_none()
        );
        // Same person, another agent: not the same caller.
        assert!(
            sessions
                .touch(&id, &principal("alice", Some("agent-b")))
                .is_none()
        );
        assert!(!sessions.end(&id, &principal("bob", None)));
        assert!(sessions.end(&id, &alice));
        assert!(sessions.touch(&id, &alice).is_none());
    }

    #[test]
    fn a_caller_at_its_limit_loses_its_least_recently_used_session() {
        let sessions = Sessions::new(Duration::from_secs(60), 2);
        let alice = principal("alice", None);
        let (first, _) = sessions.open(&alice, "2025-11-25", None);
        let (second, _) = sessions.open(&alice, "2025-11-25", None);
        sessions.touch(&first, &alice);
        let (_, evicted) = sessions.open(&alice, "2025-11-25", None);
        assert_eq!(evicted.as_deref(), Some(second.as_str()));
        assert!(sessions.touch(&first, &alice).is_some());
        // Another caller's sessions do not count against alice.
        let (_, evicted) = sessions.open(&principal("bob", None), "2025-11-25", None);
        assert_eq!(evicted, None);
    }

    #[test]
    fn identities_do_not_collide_through_separators() {
        assert_ne!(
            identity(&principal("a|1:b", None)),
            identity(&principal("a", Some("b")))
        );
        assert_eq!(session_hash("x").len(), 16);
    }
}
