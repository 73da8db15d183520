//! Section number → section, lock-free for readers: a two-level table of
//! atomic pointers, like the kernel's SPARSEMEM_EXTREME `mem_section` roots.
//! 2^25 section numbers cover 52 physical address bits (4 PiB) with 128 MiB
//! sections; only roots that hold a section get a chunk.
//!
//! Entries are only ever added or replaced, never freed while the directory
//! lives: a reader may hold a `&T` from `get()` while a writer replaces the
//! entry, so replaced entries are kept until drop.

use std::{
    ptr,
    sync::{
        Mutex,
        atomic::{AtomicPtr, Ordering},
    },
};

const CHUNK_BITS: u32 = 13;
const CHUNK: usize = 1 << CHUNK_BITS;
/// 52 physical address bits − 27 section bits − 13 chunk bits.
const ROOTS: usize = 1 << 12;

struct Chunk<T> {
    slots: [AtomicPtr<T>; CHUNK],
}

pub struct Directory<T> {
    roots: Box<[AtomicPtr<Chunk<T>>; ROOTS]>,
    /// Writers serialise here; also keeps the numbers and replaced entries.
    writer: Mutex<Writer<T>>,
}

struct Writer<T> {
    numbers: Vec<u64>,
    retired: Vec<*mut T>,
}

// SAFETY: the directory owns its Ts (through raw pointers from Box::into_raw);
// readers get shared references only, so Send + Sync follow from T's.
unsafe impl<T: Send + Sync> Send for Directory<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Directory<T> {}

impl<T> Directory<T> {
    pub fn new() -> Self {
        Self {
            roots: Box::new(std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut()))),
            writer: Mutex::new(Writer { numbers: Vec::new(), retired: Vec::new() }),
        }
    }

    /// The entry for section `nr`, if any.
    #[inline]
    pub fn get(&self, nr: u64) -> Option<&T> {
        let root = self.roots.get((nr >> CHUNK_BITS) as usize)?.load(Ordering::Acquire);
        if root.is_null() {
            return None;
        }
        // SAFETY: non-null roots point to chunks that live as long as self.
        let chunk = unsafe { &*root };
        let p = chunk.slots[(nr as usize) & (CHUNK - 1)].load(Ordering::Acquire);
        // SAFETY: non-null slots point to Ts that live as long as self.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Sets the entry of section `nr`; a previous entry stays alive until drop.
    pub fn insert(&self, nr: u64, value: T) {
        let Some(root) = self.roots.get((nr >> CHUNK_BITS) as usize) else { return };
        let Ok(mut w) = self.writer.lock() else { return };
        let mut chunk = root.load(Ordering::Acquire);
        if chunk.is_null() {
            let fresh = Box::new(Chunk { slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())) });
            chunk = Box::into_raw(fresh);
            root.store(chunk, Ordering::Release);
        }
        // SAFETY: the chunk was just created or loaded non-null; it lives as long as self.
        let slot = unsafe { &(*chunk).slots[(nr as usize) & (CHUNK - 1)] };
        let old = slot.swap(Box::into_raw(Box::new(value)), Ordering::AcqRel);
        if old.is_null() {
            w.numbers.push(nr);
            w.numbers.sort_unstable();
        } else {
            w.retired.push(old);
        }
    }

    /// Section numbers with an entry, ascending.
    pub fn numbers(&self) -> Vec<u64> {
        self.writer.lock().map(|w| w.numbers.clone()).unwrap_or_default()
    }

    /// Bytes of the root table and allocated chunks.
    pub fn overhead_bytes(&self) -> usize {
        let chunks = self.roots.iter().filter(|r| !r.load(Ordering::Relaxed).is_null()).count();
        ROOTS * size_of::<usize>() + chunks * CHUNK * size_of::<usize>()
    }
}

impl<T> Default for Directory<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for Directory<T> {
    fn drop(&mut self) {
        let retired = self.writer.get_mut().map(|w| std::mem::take(&mut w.retired)).unwrap_or_default();
        for p in retired {
            // SAFETY: retired pointers came from Box::into_raw and nothing references them now.
            drop(unsafe { Box::from_raw(p) });
        }
        for root in self.roots.iter() {
            let chunk = root.load(Ordering::Acquire);
            if chunk.is_null() {
                continue;
            }
            // SAFETY: chunk came from Box::into_raw; &mut self means no readers remain.
            let chunk = unsafe { Box::from_raw(chunk) };
            for slot in chunk.slots.iter() {
                let p = slot.load(Ordering::Acquire);
                if !p.is_null() {
                    // SAFETY: as above, each live entry is freed exactly once.
                    drop(unsafe { Box::from_raw(p) });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn get_insert_replace() {
        let d = Directory::new();
        assert!(d.get(5).is_none());
        d.insert(5, "a".to_string());
        d.insert((1 << 24) + 3, "far".to_string());
        assert_eq!(d.get(5).map(String::as_str), Some("a"));
        assert_eq!(d.get((1 << 24) + 3).map(String::as_str), Some("far"));
        let held = d.get(5).unwrap();
        d.insert(5, "b".to_string());
        assert_eq!(held, "a", "a reference taken before a replace stays valid");
        assert_eq!(d.get(5).map(String::as_str), Some("b"));
        assert_eq!(d.numbers(), vec![5, (1 << 24) + 3]);
        assert!(d.get(1 << 40).is_none(), "beyond 52 bits");
    }

    #[test]
    fn readers_and_a_writer_concurrently() {
        let d = Arc::new(Directory::new());
        let w = {
            let d = d.clone();
            std::thread::spawn(move || {
                for i in 0..2000u64 {
                    d.insert(i * 7, i);
                }
            })
        };
        for _ in 0..50 {
            for i in 0..2000u64 {
                if let Some(v) = d.get(i * 7) {
                    assert_eq!(*v, i);
                }
            }
        }
        w.join().unwrap();
        assert_eq!(d.numbers().len(), 2000);
    }
}
