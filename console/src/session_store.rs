//! The sessions' store: in memory, as `tower-sessions`' `MemoryStore`, but an expired record
//! does not stay for ever. `MemoryStore` only hides expired records, so every sign-in started
//! and never finished (anyone can start one) would be kept until a restart; here expired
//! records are dropped whenever the store has doubled since the last sweep, so memory follows
//! the live sessions at an amortised constant cost per new session.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

/// The fewest records before the first sweep.
const FIRST_SWEEP_AT: usize = 1_024;

#[derive(Clone, Debug, Default)]
pub struct Sessions(Arc<Mutex<Records>>);

#[derive(Debug, Default)]
struct Records {
    by_id: HashMap<Id, Record>,
    next_sweep_at: usize,
}

#[cfg(test)]
impl Sessions {
    /// How many records are kept, expired ones not yet swept included.
    async fn kept(&self) -> usize {
        self.0.lock().await.by_id.len()
    }
}

fn is_active(record: &Record) -> bool {
    record.expiry_date > OffsetDateTime::now_utc()
}

#[async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        let mut records = self.0.lock().await;
        if records.by_id.len() >= records.next_sweep_at.max(FIRST_SWEEP_AT) {
            records.by_id.retain(|_, record| is_active(record));
            records.next_sweep_at = records.by_id.len().saturating_mul(2);
        }
        while records.by_id.contains_key(&record.id) {
            record.id = Id::default();
        }
        records.by_id.insert(record.id, record.clone());
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.0.lock().await.by_id.insert(record.id, record.clone());
        Ok(())
    }

    async fn load(&self, session_id: &Id) -> session_store::Result<Option<Record>> {
        Ok(self
            .0
            .lock()
            .await
            .by_id
            .get(session_id)
            .filter(|record| is_active(record))
            .cloned())
    }

    async fn delete(&self, session_id: &Id) -> session_store::Result<()> {
        self.0.lock().await.by_id.remove(session_id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(expiry_date: OffsetDateTime) -> Record {
        Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date,
        }
    }

    #[tokio::test]
    async fn expired_records_are_swept_as_the_store_grows() {
        let sessions = Sessions::default();
        let past = OffsetDateTime::now_utc() - time::Duration::minutes(1);
        let future = OffsetDateTime::now_utc() + time::Duration::minutes(30);
        let mut live = record(future);
        sessions.create(&mut live).await.unwrap();
        for _ in 0..FIRST_SWEEP_AT * 3 {
            sessions.create(&mut record(past)).await.unwrap();
        }
        assert!(
            sessions.kept().await <= FIRST_SWEEP_AT + 1,
            "{}",
            sessions.kept().await
        );
        assert!(sessions.load(&live.id).await.unwrap().is_some());
        let mut expired = record(past);
        sessions.create(&mut expired).await.unwrap();
        assert!(sessions.load(&expired.id).await.unwrap().is_none());
        sessions.delete(&live.id).await.unwrap();
        assert!(sessions.load(&live.id).await.unwrap().is_none());
    }
}
