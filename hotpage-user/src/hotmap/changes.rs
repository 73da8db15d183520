//! What the node workers change in the map besides the accesses: each READY
//! record they take and each record they put back, with the number of
//! accesses the map had handled at that moment. A recording of the access
//! stream keeps them, so a replay puts them at the same places and makes the
//! same READY decisions as the live map did.

use std::sync::{OnceLock, atomic::Ordering, mpsc::Sender};

use super::{HotMap, ReadyPage};

/// One change a worker made, after `seq` accesses had been handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapChange {
    /// A READY record taken by a walk (`pghot_get_record()`).
    Taken { seq: u64, pfn: u64 },
    /// A taken record put back after a transient failure or a limit.
    Rearmed { seq: u64, page: ReadyPage },
}

impl MapChange {
    pub fn seq(&self) -> u64 {
        match self {
            Self::Taken { seq, .. } | Self::Rearmed { seq, .. } => *seq,
        }
    }
}

/// Where the changes go, once a recorder asks for them.
pub(super) type ChangeLog = OnceLock<Sender<MapChange>>;

impl HotMap {
    /// Sends every later take and re-arm to `tx` (once per map; false if a
    /// log was set already).
    pub fn log_changes(&self, tx: Sender<MapChange>) -> bool {
        self.changes.set(tx).is_ok()
    }

    /// Accesses handed to the map so far, every outcome counted; its
    /// position in the stream. Exact with one recording thread.
    pub fn accesses_handled(&self) -> u64 {
        self.handled.load(Ordering::Acquire)
    }

    pub(super) fn log(&self, change: impl FnOnce(u64) -> MapChange) {
        if let Some(tx) = self.changes.get() {
            let _ = tx.send(change(self.handled.load(Ordering::Acquire)));
        }
    }

    /// Replays a logged change on this map.
    pub fn apply(&self, change: &MapChange) {
        match change {
            MapChange::Taken { pfn, .. } => {
                self.take_ready(*pfn);
            }
            MapChange::Rearmed { page, .. } => {
                self.rearm(page);
            }
        }
    }
}
