//! One pointer per thread, kept in a POSIX thread-specific slot.
//!
//! A thread-local of a `dlopen`ed library costs every thread that touches it a heap
//! block, the library's whole thread-local segment (about 0.2 KiB here), while a
//! thread's first 32 thread-specific slots are part of its descriptor. The pointers
//! that every running chunk sets and clears (its interruptor, its waiter) live in
//! slots, so a chunk that needs none of the library's thread-locals (they serve
//! protected calls and panics) costs its thread no such block; memory per live thread
//! is measured against the C original's. A thread-local stands in when the process has
//! no key left to give, or no memory for a slot.

use std::cell::Cell;
use std::ffi::c_void;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::thread::LocalKey;

/// Where a thread's pointer is: its slot under this library copy's key, or, when that
/// could not be had, the thread-local `fallback`.
pub struct ThreadSlot {
    key: OnceLock<Option<libc::pthread_key_t>>,
    fallback: &'static LocalKey<Cell<*const c_void>>,
    /// Whether any thread has used `fallback`: until then no read touches it.
    fallback_used: AtomicBool,
}

impl ThreadSlot {
    pub const fn new(fallback: &'static LocalKey<Cell<*const c_void>>) -> ThreadSlot {
        ThreadSlot {
            key: OnceLock::new(),
            fallback,
            fallback_used: AtomicBool::new(false),
        }
    }

    /// The key, made on first use; `None` when the process has none left.
    fn key(&self) -> Option<libc::pthread_key_t> {
        *self.key.get_or_init(|| {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is written when the call succeeds; no destructor is needed
            // (the value is a plain pointer that owns nothing).
            (unsafe { libc::pthread_key_create(&mut key, None) } == 0).then_some(key)
        })
    }

    /// This thread's pointer; null when none is set.
    pub fn get(&self) -> *const c_void {
        if let Some(k) = self.key() {
            // SAFETY: `key` made this key; reading one's own slot has no precondition.
            let p = unsafe { libc::pthread_getspecific(k) };
            if !p.is_null() {
                return p;
            }
        }
        if self.fallback_used.load(Ordering::Relaxed) {
            return self.fallback.with(Cell::get);
        }
        ptr::null()
    }

    /// Sets this thread's pointer; null clears it.
    pub fn set(&self, value: *const c_void) {
        if let Some(k) = self.key() {
            // SAFETY: this library's key; the value is a plain pointer, read back only
            // by `get` on this thread. Clearing a slot never allocates.
            unsafe {
                if !value.is_null() {
                    if libc::pthread_setspecific(k, value) == 0 {
                        // A pointer the stand-in still held is not this thread's now.
                        if self.fallback_used.load(Ordering::Relaxed) {
                            self.fallback.with(|c| c.set(ptr::null()));
                        }
                        return;
                    }
                } else if !libc::pthread_getspecific(k).is_null() {
                    libc::pthread_setspecific(k, ptr::null());
                    return; // it was set through the key: the thread-local is unused
                }
            }
        }
        if !value.is_null() {
            self.fallback_used.store(true, Ordering::Relaxed);
        }
        if !value.is_null() || self.fallback_used.load(Ordering::Relaxed) {
            self.fallback.with(|c| c.set(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        static FALLBACK: Cell<*const c_void> = const { Cell::new(ptr::null()) };
    }
    static SLOT: ThreadSlot = ThreadSlot::new(&FALLBACK);

    thread_local! {
        static EXHAUSTED_FALLBACK: Cell<*const c_void> = const { Cell::new(ptr::null()) };
    }

    #[test]
    fn with_no_key_left_the_thread_local_stands_in() {
        // Take every key the process has left, so the slot's first use gets none.
        let mut taken = Vec::new();
        loop {
            let mut key: libc::pthread_key_t = 0;
            // SAFETY: `key` is written when the call succeeds.
            if unsafe { libc::pthread_key_create(&mut key, None) } != 0 {
                break;
            }
            taken.push(key);
        }
        let slot = ThreadSlot::new(&EXHAUSTED_FALLBACK);
        let mine = 0u8;
        slot.set((&raw const mine).cast());
        let seen = std::thread::scope(|s| s.spawn(|| slot.get() as usize).join().unwrap());
        let got = slot.get();
        slot.set(ptr::null());
        let cleared = slot.get();
        for key in taken {
            // SAFETY: keys this test made and nobody else uses.
            unsafe { libc::pthread_key_delete(key) };
        }
        assert_eq!(slot.key(), None, "the test took every key");
        assert_eq!(seen, 0, "another thread saw this thread's pointer");
        assert_eq!(got, (&raw const mine).cast());
        assert!(cleared.is_null());
    }

    #[test]
    fn each_thread_sees_only_its_own_pointer() {
        let mine = 0u8;
        SLOT.set((&raw const mine).cast());
        let seen = std::thread::spawn(|| SLOT.get() as usize).join().unwrap();
        assert_eq!(seen, 0);
        assert_eq!(SLOT.get(), (&raw const mine).cast());
        SLOT.set(ptr::null());
        assert!(SLOT.get().is_null());
    }
}
