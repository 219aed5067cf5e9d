//! Numbers each call's events in log order, so that no two share a `seq`.
//!
//! The gateway numbers a call's events, each instance from its own view of the call. Two
//! instances that record an event of one held call at the same moment (two approvers deciding
//! through two gateways, two instances racing to claim or expire it) give both the same number,
//! and only the partition order says which came first: every event of a call has its call id as
//! key, so one partition holds them all, and the processor is the one writer of that
//! partition's log. So the processor keeps the gateway's number unless an earlier event of the
//! call already has it (or a larger one), and then gives the next number, keeping the gateway's
//! in the entry's `source.gateway_seq`. A gap in the gateway's numbering stays a gap.
//!
//! It needs, per call, the last number it gave, but only:
//! - for calls with an event in the last [`RECENT_WINDOW`] of event time. Events that race are
//!   recorded within moments of each other; when a partition is opened, the tail of its log
//!   over that window is read back, so a race across a restart is caught too.
//! - for calls whose numbering was shifted, until [`SHIFTED_RETENTION`] after their last event:
//!   the gateway numbers their later events from its own view, which is behind by one per
//!   shift. These few are written into every checkpoint as extension lines
//!   `callproof-seq <call id> <last seq> <last time µs>`, so they are committed with the entries
//!   they describe.

use std::collections::HashMap;
use std::sync::Arc;

use callproof_tlog::checkpoint::Checkpoint;
use callproof_tlog::store::LogReader;
use object_store::ObjectStore;
use serde_json::Value;

use crate::ProcessorError;
use callproof_evidence_format::store::read_entries;

/// The first word of a checkpoint extension line holding a shifted call's numbering.
pub const SEQ_EXTENSION: &str = "callproof-seq";

/// How far back in event time a call's numbering is remembered (and read back from the log
/// when a partition is opened). Racing events are recorded within moments of each other.
pub const RECENT_WINDOW_MICROS: i64 = 60 * 1_000_000;

/// How long a shifted call's numbering is kept after its last event: as long as a call can be
/// held for approval, and a day more for it to run.
pub const SHIFTED_RETENTION_MICROS: i64 =
    (callproof_config::MAX_APPROVAL_EXPIRY_SECS as i64 + 24 * 3600) * 1_000_000;

/// The longest call id whose shift is kept in a checkpoint (the gateway's are UUIDs).
const MAX_CALL_ID_BYTES: usize = 128;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CallNumbering {
    last_seq: i32,
    last_time: i64,
    shifted: bool,
}

/// One partition's numbering of its calls' events.
#[derive(Debug, Default, Clone)]
pub struct Sequencer {
    calls: HashMap<String, CallNumbering>,
    newest_time: i64,
    /// The extension lines as of the last append.
    appended: Vec<String>,
    /// The extension lines as of each message numbered since that changed them, by offset:
    /// a checkpoint carries those of its last message, not of messages numbered after it.
    changes: Vec<(i64, Vec<String>)>,
}

impl Sequencer {
    /// The numbering a log leaves off with: its checkpoint's shifted calls, and every call of
    /// the entries in the last [`RECENT_WINDOW_MICROS`] before its newest one.
    pub async fn recover(
        checkpoint: &Checkpoint,
        reader: &LogReader,
        store: &Arc<dyn ObjectStore>,
        partition: i32,
    ) -> Result<Sequencer, ProcessorError> {
        let mut sequencer = Sequencer::from_extensions(&checkpoint.extensions);
        sequencer.appended = sequencer.extensions();
        let size = checkpoint.size;
        let chunk = u64::from(callproof_tlog::tile::TILE_WIDTH);
        let mut tail: Vec<(String, i32, i64)> = Vec::new();
        let mut end = size;
        let mut horizon: Option<i64> = None;
        'reading: while end > 0 {
            let start = end.saturating_sub(chunk);
            let entries = read_entries(reader, store, partition, start, end, size).await?;
            for entry in entries.iter().rev() {
                let Some((call_id, seq, time)) = numbering_of(entry) else {
                    continue;
                };
                let horizon = *horizon.get_or_insert(time - RECENT_WINDOW_MICROS);
                if time < horizon {
                    break 'reading;
                }
                tail.push((call_id.to_string(), seq, time));
            }
            end = start;
        }
        for (call_id, seq, time) in tail.into_iter().rev() {
            sequencer.remember(&call_id, seq, time, false);
        }
        Ok(sequencer)
    }

    /// The shifted calls recorded in a checkpoint's extension lines.
    pub fn from_extensions(extensions: &[String]) -> Sequencer {
        let mut sequencer = Sequencer::default();
        for line in extensions {
            let mut words = line.split(' ');
            if words.next() != Some(SEQ_EXTENSION) {
                continue;
            }
            let (Some(call_id), Some(Ok(last_seq)), Some(Ok(last_time)), None) = (
                words.next(),
                words.next().map(str::parse::<i32>),
                words.next().map(str::parse::<i64>),
                words.next(),
            ) else {
                tracing::warn!(%line, "malformed sequence extension in a checkpoint; ignored");
                continue;
            };
            sequencer.remember(call_id, last_seq, last_time, true);
        }
        sequencer
    }

    /// The number of the next event of `call_id` in the log, the message at `offset`, which
    /// the gateway numbered `gateway_seq` and recorded at `time` (µs).
    pub fn number(&mut self, call_id: &str, gateway_seq: i32, time: i64, offset: i64) -> i32 {
        let previous = self.calls.get(call_id).copied();
        let seq = match previous {
            Some(previous) if gateway_seq <= previous.last_seq => {
                previous.last_seq.saturating_add(1)
            }
            _ => gateway_seq,
        };
        let shifted = seq != gateway_seq || previous.is_some_and(|previous| previous.shifted);
        self.remember(call_id, seq, time, shifted);
        if shifted {
            self.changes.push((offset, self.extensions()));
        }
        seq
    }

    /// The extension lines for a checkpoint whose last message is at `offset`.
    pub fn extensions_through(&self, offset: i64) -> Vec<String> {
        self.changes
            .iter()
            .rev()
            .find(|(changed_at, _)| *changed_at <= offset)
            .map_or_else(|| self.appended.clone(), |(_, lines)| lines.clone())
    }

    /// The messages up to `offset` are in the log: their lines are the checkpoint's now, and
    /// calls no longer needed can go.
    pub fn appended_through(&mut self, offset: i64) {
        self.appended = self.extensions_through(offset);
        self.changes.retain(|(changed_at, _)| *changed_at > offset);
        self.forget_old();
    }

    fn remember(&mut self, call_id: &str, last_seq: i32, last_time: i64, shifted: bool) {
        self.newest_time = self.newest_time.max(last_time);
        let numbering = CallNumbering {
            last_seq,
            last_time,
            shifted,
        };
        match self.calls.get_mut(call_id) {
            Some(known) => {
                known.last_seq = known.last_seq.max(last_seq);
                known.last_time = known.last_time.max(last_time);
                known.shifted |= shifted;
            }
            None => {
                self.calls.insert(call_id.to_string(), numbering);
            }
        }
    }

    /// Forgets the calls no longer needed (see the module documentation).
    pub fn forget_old(&mut self) {
        let recent = self.newest_time.saturating_sub(RECENT_WINDOW_MICROS);
        let retained = self.newest_time.saturating_sub(SHIFTED_RETENTION_MICROS);
        self.calls.retain(|_, call| {
            call.last_time >= recent || (call.shifted && call.last_time >= retained)
        });
    }

    /// The extension lines of the shifted calls, in call id order (a checkpoint is the same
    /// whoever writes it).
    pub fn extensions(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .calls
            .iter()
            .filter(|(call_id, call)| call.shifted && is_safe_call_id(call_id))
            .map(|(call_id, call)| {
                format!(
                    "{SEQ_EXTENSION} {call_id} {} {}",
                    call.last_seq, call.last_time
                )
            })
            .collect();
        lines.sort_unstable();
        lines
    }

    /// Calls remembered (for the metrics).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}

/// Whether a call id can stand in an extension line: a gateway's UUID can; an id with spaces,
/// controls or a great length (from a producer other than the gateway) cannot, and its shift
/// is then not carried across a restart.
fn is_safe_call_id(call_id: &str) -> bool {
    !call_id.is_empty()
        && call_id.len() <= MAX_CALL_ID_BYTES
        && call_id.bytes().all(|byte| byte.is_ascii_graphic())
}

/// A stored entry's call id, `seq` and time, if it is an event.
fn numbering_of(entry: &Value) -> Option<(&str, i32, i64)> {
    let event = entry.get("event")?;
    Some((
        event.get("call_id")?.as_str()?,
        i32::try_from(event.get("seq")?.as_i64()?).ok()?,
        event.get("time")?.as_i64()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_number_stands_until_an_earlier_event_took_it() {
        let mut sequencer = Sequencer::default();
        assert_eq!(sequencer.number("a", 0, 10, 0), 0);
        assert_eq!(sequencer.number("a", 1, 11, 1), 1);
        // Two instances recorded event 2 at the same moment: the second becomes 3.
        assert_eq!(sequencer.number("a", 2, 12, 2), 2);
        assert_eq!(sequencer.number("a", 2, 12, 3), 3);
        // The gateways' next number is 3 (they saw 2 twice): it follows as 4.
        assert_eq!(sequencer.number("a", 3, 13, 4), 4);
        // A gap in the gateway's numbering stays a gap.
        assert_eq!(sequencer.number("b", 0, 13, 5), 0);
        assert_eq!(sequencer.number("b", 2, 14, 6), 2);
        assert_eq!(
            sequencer.extensions(),
            vec![format!("{SEQ_EXTENSION} a 4 13")]
        );
        // A checkpoint ending before the shift carries nothing; one after it, the shift as it
        // stood at its last message.
        assert!(sequencer.extensions_through(2).is_empty());
        assert_eq!(
            sequencer.extensions_through(3),
            vec![format!("{SEQ_EXTENSION} a 3 12")]
        );
        sequencer.appended_through(3);
        assert_eq!(
            sequencer.extensions_through(3),
            vec![format!("{SEQ_EXTENSION} a 3 12")]
        );
        assert_eq!(
            sequencer.extensions_through(6),
            vec![format!("{SEQ_EXTENSION} a 4 13")]
        );
    }

    #[test]
    fn shifted_calls_survive_a_checkpoint_and_old_ones_are_forgotten() {
        let mut sequencer = Sequencer::default();
        sequencer.number("held", 3, 0, 0);
        sequencer.number("held", 3, 0, 1);
        sequencer.number("quick", 0, 0, 2);
        let mut restarted = Sequencer::from_extensions(&sequencer.extensions());
        assert_eq!(restarted.number("held", 4, 1, 3), 5);

        // Past the recent window only the shifted call is kept; past its retention, nothing.
        restarted.number("later", 0, RECENT_WINDOW_MICROS + 10, 4);
        restarted.forget_old();
        assert!(restarted.calls.contains_key("held"));
        assert!(!restarted.calls.contains_key("quick"));
        restarted.number("much-later", 0, SHIFTED_RETENTION_MICROS + 10, 5);
        restarted.forget_old();
        assert!(!restarted.calls.contains_key("held"));
        assert_eq!(restarted.len(), 1);
    }

    #[test]
    fn unsafe_call_ids_and_malformed_lines_are_left_out() {
        let mut sequencer = Sequencer::default();
        for call_id in ["with space", "new\nline", "", &"x".repeat(200)] {
            sequencer.number(call_id, 0, 0, 0);
            sequencer.number(call_id, 0, 0, 1);
        }
        assert!(sequencer.extensions().is_empty());
        let parsed = Sequencer::from_extensions(&[
            format!("{SEQ_EXTENSION} a 1"),
            format!("{SEQ_EXTENSION} a x 2"),
            format!("{SEQ_EXTENSION} a 1 2 3"),
            "other line".into(),
        ]);
        assert!(parsed.is_empty());
    }
}
