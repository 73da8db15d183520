//! A counter that threads bump without a locked instruction: each thread owns
//! one cache-line-sized slot (like the kernel's per-CPU counters) and adds to
//! it with a plain load and store; readers sum the slots. Threads beyond the
//! slot count share the last slot with an atomic add.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

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
