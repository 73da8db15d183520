//! Counters shared between the thread that counts and the readers that
//! report: [`counter_set!`](crate::counter_set) declares a named set of
//! them once (a snapshot struct, an id per counter, and the shared atomic
//! set), and [`ThreadCounter`] is one counter that many threads bump
//! without a locked instruction.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// Declares a set of `u64` counters:
/// - `$Snapshot`: a plain struct with one `pub` field per counter (serde, a
///   readable snapshot, or a local tally that is published at once);
/// - `$Id`: one variant per counter, with `ALL`, `NAMES` and `HELP` (the doc
///   strings), and `$Snapshot::get(id)`;
/// - `$Shared` (optional): the atomic set readers share: `add(id, n)` from the
///   counting thread, `publish(&snapshot)` to store a local tally, `snapshot()`.
#[macro_export]
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $Snapshot:ident, ids $Id:ident $(, shared $Shared:ident)? {
            $($name:ident: $doc:literal),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        #[serde(default)]
        $vis struct $Snapshot { $(#[doc = $doc] pub $name: u64),* }

        /// Counter ids, in the order of `NAMES`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[allow(non_camel_case_types)]
        #[repr(usize)]
        $vis enum $Id { $($name),* }

        impl $Id {
            pub const ALL: &'static [$Id] = &[$($Id::$name),*];
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),*];
            pub const HELP: &'static [&'static str] = &[$($doc),*];
            pub const COUNT: usize = Self::ALL.len();
        }

        impl $Snapshot {
            pub fn get(&self, id: $Id) -> u64 {
                match id { $($Id::$name => self.$name),* }
            }

            /// Each counter from `value(id)`.
            pub fn from_fn(value: impl Fn($Id) -> u64) -> Self {
                Self { $($name: value($Id::$name)),* }
            }

            /// Counter-wise difference since `earlier` (counters only grow).
            pub fn since(&self, earlier: &Self) -> Self {
                Self::from_fn(|id| self.get(id).saturating_sub(earlier.get(id)))
            }
        }

        $( $crate::counter_set!(@shared $vis $Snapshot, $Id, $Shared); )?
    };
    (@shared $vis:vis $Snapshot:ident, $Id:ident, $Shared:ident) => {
        /// The shared, atomic form of the set.
        $vis struct $Shared([std::sync::atomic::AtomicU64; $Id::COUNT]);

        impl Default for $Shared {
            fn default() -> Self {
                Self(std::array::from_fn(|_| std::sync::atomic::AtomicU64::new(0)))
            }
        }

        impl $Shared {
            pub fn add(&self, id: $Id, n: u64) {
                if n > 0 {
                    self.0[id as usize].fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }

            /// Stores a whole tally (kept by one thread) for the readers.
            pub fn publish(&self, s: &$Snapshot) {
                for id in $Id::ALL {
                    self.0[*id as usize].store(s.get(*id), std::sync::atomic::Ordering::Relaxed);
                }
            }

            pub fn snapshot(&self) -> $Snapshot {
                $Snapshot::from_fn(|id| self.0[id as usize].load(std::sync::atomic::Ordering::Relaxed))
            }
        }
    };
}

const SLOTS: usize = 32;

#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicU64);

#[derive(Default)]
pub struct ThreadCounter {
    slots: [Slot; SLOTS],
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's slot, or SLOTS − 1 (shared) once every slot is taken.
    static SLOT: usize = NEXT_THREAD.fetch_add(1, Relaxed);
}

impl ThreadCounter {
    #[inline]
    pub fn add(&self, n: u64) {
        let idx = SLOT.with(|s| *s);
        if idx < SLOTS - 1 {
            // Only this thread writes this slot: no read-modify-write needed.
            let s = &self.slots[idx].0;
            s.store(s.load(Relaxed).wrapping_add(n), Relaxed);
        } else {
            self.slots[SLOTS - 1].0.fetch_add(n, Relaxed);
        }
    }

    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn get(&self) -> u64 {
        self.slots.iter().map(|s| s.0.load(Relaxed)).fold(0, u64::wrapping_add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    counter_set! {
        /// Two counters.
        struct Pair, ids PairId, shared SharedPair {
            first: "the first",
            second: "the second",
        }
    }

    #[test]
    fn a_counter_set_adds_publishes_and_snapshots_by_name() {
        let shared = SharedPair::default();
        shared.add(PairId::second, 3);
        assert_eq!(shared.snapshot(), Pair { first: 0, second: 3 });
        shared.publish(&Pair { first: 7, second: 1 });
        let s = shared.snapshot();
        assert_eq!((s.get(PairId::first), s.second), (7, 1));
        assert_eq!(s.since(&Pair { first: 2, second: 5 }), Pair { first: 5, second: 0 }, "never below 0");
        assert_eq!((PairId::NAMES, PairId::HELP[1]), (&["first", "second"][..], "the second"));
    }

    #[test]
    fn many_threads_lose_nothing() {
        let c = Arc::new(ThreadCounter::default());
        let threads: Vec<_> = (0..40)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.inc();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 400_000);
    }
}
