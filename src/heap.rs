//! The small-block heap of a child state: Lua's many small objects packed into chunks
//! the state owns, freed all at once when the state closes.
//!
//! A fresh state is a few hundred blocks, most of them 17–64 bytes (short strings,
//! closures, upvalues, small tables). The C library's `malloc` gives each a header
//! and rounds it up, about a fifth of a fresh state's heap; here a block of up to
//! [`SMALL_MAX`] bytes costs its size rounded to 16 and nothing more, because Lua
//! tells the allocator a block's size on every call and no header is needed to find
//! it again. Larger blocks go to `malloc` as before.
//!
//! Freed small blocks wait on one list per size class for the next block of that
//! class (or of a smaller one, split off a larger free block). When no list can serve
//! and the free blocks add up to enough (see [`Heap::compact`]), adjacent free blocks
//! are joined and chunks left wholly free go back to `malloc` before a new chunk is
//! taken: memory freed as objects of one size serves objects of another size, and
//! blocks over [`SMALL_MAX`], as it does with `malloc`. Without that, a state that
//! made and dropped objects of each size in turn would hold several times the memory
//! it ever used at once, unseen by its memory limit. The remaining chunks go back to
//! `malloc` when the state closes.
//!
//! Everything here runs on the thread using the state, one call at a time (Lua's
//! allocator contract); nothing is shared, so nothing is synchronised.

use std::ffi::c_void;
use std::ptr;

/// Blocks of at most this many bytes live in the chunks.
const SMALL_MAX: usize = 256;
/// Size classes are multiples of this; it is also the alignment of every small block,
/// the same as `malloc`'s (userdata contents may need it).
const GRAIN: usize = 16;
const CLASSES: usize = SMALL_MAX / GRAIN;
/// Room at the start of each chunk for its [`ChunkHead`]; a multiple of [`GRAIN`] so
/// that the blocks after it stay aligned.
const HEADER: usize = GRAIN;
/// A chunk's size, counting `malloc`'s own 8-byte header: chunks start at about a
/// kilobyte, so that the part of the last one a state never uses stays small, and grow
/// with the state (a thirty-second of what it holds) so that a big state needs few of
/// them.
const MIN_CHUNK: usize = 1024;
const MAX_CHUNK: usize = 64 * 1024;
const MALLOC_HEADER: usize = 8;

/// A free small block: the link to the next free block of its class.
#[repr(C)]
struct Free {
    next: *mut Free,
}

/// The start of each chunk: the link to the chunk made before it, and the chunk's
/// size in bytes (this head included).
#[repr(C)]
struct ChunkHead {
    next: *mut ChunkHead,
    size: usize,
}
const _: () = assert!(std::mem::size_of::<ChunkHead>() <= HEADER);

/// See the module documentation. All-null is the empty heap.
pub struct Heap {
    /// `free[k]`: free blocks of `(k + 1) * GRAIN` bytes.
    free: [*mut Free; CLASSES],
    /// The unused end of the newest chunk: `bump..end`, a multiple of [`GRAIN`].
    bump: *mut u8,
    end: *mut u8,
    /// The newest chunk; each chunk's head links to the one before.
    chunks: *mut ChunkHead,
    /// Bytes of all chunks, to size the next one.
    held: usize,
    /// Bytes of the blocks on the free lists.
    free_bytes: usize,
    /// [`Heap::compact`] runs only when `free_bytes` reaches this: twice what the last
    /// one left on the lists, and a sixteenth of `held`, so that its cost (sorting the
    /// free blocks, walking the chunks) is paid by blocks freed since.
    compact_at: usize,
    /// Blocks up to this size are packed: [`SMALL_MAX`], or 0 to give every block to
    /// `malloc` (see [`Heap::new`]).
    small_max: usize,
}

/// The class of a small block of `size` bytes (`1..=SMALL_MAX`).
fn class(size: usize) -> usize {
    debug_assert!((1..=SMALL_MAX).contains(&size));
    (size.max(1) - 1) / GRAIN
}

fn class_size(k: usize) -> usize {
    (k + 1) * GRAIN
}

impl Heap {
    /// An empty heap; with `packed` false every block is `malloc`'s own, so that
    /// memory checkers (valgrind, sanitizers) see each Lua object as a block.
    pub const fn new(packed: bool) -> Heap {
        Heap {
            free: [ptr::null_mut(); CLASSES],
            bump: ptr::null_mut(),
            end: ptr::null_mut(),
            chunks: ptr::null_mut(),
            held: 0,
            free_bytes: 0,
            compact_at: MIN_CHUNK,
            small_max: if packed { SMALL_MAX } else { 0 },
        }
    }

    /// `lua_Alloc` over this heap: `osize` is the size Lua gave the block `ptr` (0 when
    /// `ptr` is null), `nsize` the size wanted (0 frees). Null when memory runs out for
    /// growth; shrinking never fails, as Lua requires.
    ///
    /// # Safety
    /// `ptr` is null or a live block this heap returned, which Lua knows as `osize`
    /// bytes; the caller is the only one using the heap now.
    pub unsafe fn realloc(&mut self, ptr: *mut c_void, osize: usize, nsize: usize) -> *mut c_void {
        let ptr = ptr.cast::<u8>();
        if ptr.is_null() {
            return match nsize {
                0 => ptr::null_mut(),
                n if n <= self.small_max => self.take(class(n)).cast(),
                n => {
                    self.compact_for(n);
                    // SAFETY: `malloc` has no preconditions.
                    unsafe { libc::malloc(n) }
                }
            };
        }
        let small_before = osize <= self.small_max;
        if nsize == 0 {
            if small_before {
                // SAFETY: a small block of `osize` bytes of this heap (the contract).
                unsafe { self.give(ptr, class(osize)) };
            } else {
                // SAFETY: blocks over `small_max` come from `malloc` (below).
                unsafe { libc::free(ptr.cast()) };
            }
            return ptr::null_mut();
        }
        match (small_before, nsize <= self.small_max) {
            // SAFETY: the contract, as for each helper.
            (true, true) => unsafe { self.resize_small(ptr, class(osize), class(nsize)) },
            // SAFETY: as above.
            (true, false) => unsafe { self.grow_to_large(ptr, osize, nsize) },
            // SAFETY: as above.
            (false, true) => unsafe { self.shrink_to_small(ptr, nsize) },
            (false, false) => {
                if nsize > osize {
                    self.compact_for(nsize - osize);
                }
                // SAFETY: a `malloc` block (see above).
                let new = unsafe { libc::realloc(ptr.cast(), nsize) };
                // `realloc` may refuse even a shrink in theory; the old block is big
                // enough and stays a `malloc` block whatever size Lua gives it later,
                // as long as that stays over `small_max`, which it does here.
                if new.is_null() && nsize < osize {
                    ptr.cast()
                } else {
                    new
                }
            }
        }
    }

    /// Bytes the heap holds that Lua does not use now: free blocks and the unused end
    /// of the newest chunk (kept for the state's next objects; chunks wholly free go
    /// back to `malloc` at the next [`Heap::compact`], the rest when the state closes).
    pub fn unused(&self) -> usize {
        self.free_bytes + (self.end as usize - self.bump as usize)
    }

    /// A block of class `k`: a free one, or a new one from the newest chunk (or a new
    /// chunk). Null when `malloc` refuses a chunk.
    fn take(&mut self, k: usize) -> *mut u8 {
        if let Some(block) = self.take_free(k) {
            return block;
        }
        let size = class_size(k);
        if (self.end as usize) - (self.bump as usize) < size {
            // Before a new chunk, a free block of a larger class: its end goes back to
            // the lists, so freed memory serves the next sizes Lua asks for.
            if let Some(block) = self.split_free(k) {
                return block;
            }
            // Then the free blocks joined, where there are enough of them.
            if self.compact_for(size) {
                if let Some(block) = self.take_free(k).or_else(|| self.split_free(k)) {
                    return block;
                }
            }
            if !self.new_chunk() {
                return ptr::null_mut();
            }
        }
        let block = self.bump;
        // SAFETY: `bump + size <= end`, inside the newest chunk.
        self.bump = unsafe { block.add(size) };
        block
    }

    /// A block from the free list of class `k`.
    fn take_free(&mut self, k: usize) -> Option<*mut u8> {
        let head = self.free[k];
        if head.is_null() {
            return None;
        }
        // SAFETY: every block on the list is a free block of this heap, whose first
        // word `give` wrote.
        self.free[k] = unsafe { (*head).next };
        self.free_bytes -= class_size(k);
        Some(head.cast())
    }

    /// A block of class `k` cut from the start of a free block of a larger class; the
    /// rest of that block goes back to the lists.
    fn split_free(&mut self, k: usize) -> Option<*mut u8> {
        let big = (k + 1..CLASSES).find(|&b| !self.free[b].is_null())?;
        let block = self.take_free(big)?;
        // SAFETY: a free block of class `big`, no longer on its list; its bytes from
        // `class_size(k)` on are `class_size(big - k - 1)` bytes of it, aligned to
        // `GRAIN`.
        unsafe { self.give(block.add(class_size(k)), big - k - 1) };
        Some(block)
    }

    /// Puts a block of class `k` on its list.
    ///
    /// # Safety
    /// `block` is at least `class_size(k)` bytes that no one uses and that stay valid
    /// until the heap drops (a block of a chunk, or a `malloc` block adopted by
    /// `shrink_to_small`), aligned to [`GRAIN`].
    unsafe fn give(&mut self, block: *mut u8, k: usize) {
        let block = block.cast::<Free>();
        // SAFETY: the block is ours and unused; a `Free` fits in every class.
        unsafe { block.write(Free { next: self.free[k] }) };
        self.free[k] = block;
        self.free_bytes += class_size(k);
    }

    /// Runs [`Heap::compact`] when the free blocks add up to `need` bytes and to
    /// `compact_at`; whether it ran.
    fn compact_for(&mut self, need: usize) -> bool {
        if self.free_bytes < need.max(self.compact_at) {
            return false;
        }
        self.compact();
        true
    }

    /// Joins adjacent free blocks of each chunk, gives chunks that are wholly free back
    /// to `malloc`, and puts the rest back on the lists in blocks of the largest class
    /// (and one for the remainder of each run). The unused end of the newest chunk is
    /// a free block like the others, so no chunk is being filled afterwards. Blocks
    /// outside every chunk (adopted by `shrink_to_small`) stay as they are.
    fn compact(&mut self) {
        #[cfg(test)]
        tests::JOINS.with(|c| c.set(c.get() + 1));
        // Each entry is a free block's address with its class in the low bits (blocks
        // are aligned to `GRAIN`, and there are `GRAIN` classes).
        const _: () = assert!(CLASSES <= GRAIN);
        self.retire_rest();
        self.bump = ptr::null_mut();
        self.end = ptr::null_mut();
        let mut blocks: Vec<usize> = Vec::new();
        let mut chunks: Vec<(usize, usize)> = Vec::new();
        let mut chunk_count = 0;
        let mut c = self.chunks;
        while !c.is_null() {
            chunk_count += 1;
            // SAFETY: a chunk of this heap, its head written by `new_chunk`.
            c = unsafe { (*c).next };
        }
        // Every free block has at least `GRAIN` bytes.
        if blocks.try_reserve_exact(self.free_bytes / GRAIN).is_err()
            || chunks.try_reserve_exact(chunk_count).is_err()
        {
            // No memory to sort with: the lists stay as they are, and the next try
            // waits until twice as much is free.
            self.compact_at = self.free_bytes.saturating_mul(2);
            return;
        }
        for k in 0..CLASSES {
            let mut p = self.free[k];
            while !p.is_null() {
                blocks.push(p as usize | k);
                // SAFETY: a free block on list `k`, its link written by `give`.
                p = unsafe { (*p).next };
            }
        }
        let mut c = self.chunks;
        while !c.is_null() {
            // SAFETY: a chunk of this heap, its head written by `new_chunk`.
            let (next, size) = unsafe { ((*c).next, (*c).size) };
            chunks.push((c as usize, size));
            c = next;
        }
        blocks.sort_unstable();
        chunks.sort_unstable();
        self.free = [ptr::null_mut(); CLASSES];
        self.free_bytes = 0;
        self.chunks = ptr::null_mut();
        self.held = 0;
        let addr = |e: usize| e & !(GRAIN - 1);
        let size = |e: usize| class_size(e & (GRAIN - 1));
        let (mut i, mut ci) = (0, 0);
        // Whether chunk `ci` is wholly free (it goes back to `malloc` once its turn
        // in the walk is over).
        let mut whole = false;
        while i < blocks.len() || ci < chunks.len() {
            // The chunks that end before the next block are done with.
            let next_block = blocks.get(i).map_or(usize::MAX, |&e| addr(e));
            if ci < chunks.len() && chunks[ci].0 + chunks[ci].1 <= next_block {
                self.settle_chunk(chunks[ci], whole);
                whole = false;
                ci += 1;
                continue;
            }
            let start = next_block;
            let inside = ci < chunks.len() && chunks[ci].0 + HEADER <= start;
            if !inside {
                // SAFETY: a free block outside every chunk: adopted, still its class.
                unsafe { self.give(start as *mut u8, blocks[i] & (GRAIN - 1)) };
                i += 1;
                continue;
            }
            let chunk_end = chunks[ci].0 + chunks[ci].1;
            let mut end = start + size(blocks[i]);
            i += 1;
            while i < blocks.len() && addr(blocks[i]) == end && end < chunk_end {
                end += size(blocks[i]);
                i += 1;
            }
            if start == chunks[ci].0 + HEADER && end == chunk_end {
                whole = true;
                continue;
            }
            let mut at = start;
            while at < end {
                let n = (end - at).min(SMALL_MAX);
                // SAFETY: `at..at + n` is free memory of chunk `ci` (a run of free
                // blocks), aligned to `GRAIN`, `n` a multiple of it.
                unsafe { self.give(at as *mut u8, class(n)) };
                at += n;
            }
        }
        // A join walks every chunk as well as the free blocks, so the next one also
        // waits for a sixteenth of what the chunks hold (chunks have at least
        // `MIN_CHUNK` bytes: over 60 bytes freed per chunk walked). Otherwise a heap
        // of many chunks whose newest blocks die together (their chunk goes back,
        // nothing is left on the lists) joined again after every kilobyte freed.
        self.compact_at = self
            .free_bytes
            .saturating_mul(2)
            .max(self.held / 16)
            .max(MIN_CHUNK);
    }

    /// The end of [`Heap::compact`]'s walk over one chunk: it goes back to `malloc`
    /// when wholly free, and to the list of chunks otherwise.
    fn settle_chunk(&mut self, (start, size): (usize, usize), whole: bool) {
        let chunk = start as *mut ChunkHead;
        if whole {
            // SAFETY: a chunk of this heap from `malloc`, with no block in use.
            unsafe { libc::free(chunk.cast()) };
            return;
        }
        // SAFETY: a chunk of this heap; its head is ours.
        unsafe { (*chunk).next = self.chunks };
        self.chunks = chunk;
        self.held += size;
    }

    /// Starts a new chunk; the rest of the current one goes to the free lists first.
    fn new_chunk(&mut self) -> bool {
        self.retire_rest();
        let size = (self.held / 32).clamp(MIN_CHUNK, MAX_CHUNK) - MALLOC_HEADER;
        let size = size - size % GRAIN;
        #[cfg(test)]
        if tests::REFUSE_CHUNKS.with(std::cell::Cell::get) {
            return false;
        }
        // SAFETY: `malloc` has no preconditions.
        let chunk = unsafe { libc::malloc(size) }.cast::<u8>();
        if chunk.is_null() {
            return false;
        }
        // SAFETY: (1) the chunk has `size > HEADER` bytes, so the head fits at its
        // start and `bump..end` lies inside it; (2) `malloc` aligns to 16, so the
        // head is aligned and the blocks after a `HEADER` of 16 are too.
        unsafe {
            chunk.cast::<ChunkHead>().write(ChunkHead {
                next: self.chunks,
                size,
            });
            self.chunks = chunk.cast();
            self.bump = chunk.add(HEADER);
            self.end = chunk.add(size);
        }
        self.held += size;
        true
    }

    /// Gives what is left of the newest chunk to the free lists, in blocks of the
    /// largest classes that fit.
    fn retire_rest(&mut self) {
        loop {
            let rest = (self.end as usize) - (self.bump as usize);
            if rest < GRAIN {
                return;
            }
            let k = class(rest.min(SMALL_MAX));
            let block = self.bump;
            // SAFETY: (1) `block..block + class_size(k)` lies in the newest chunk's unused
            // end, valid until the heap drops; (2) `bump` stays a multiple of `GRAIN`
            // from an aligned chunk start.
            unsafe {
                self.bump = block.add(class_size(k));
                self.give(block, k);
            }
        }
    }

    /// # Safety
    /// `block` is a small block of this heap of class `from`, in use.
    unsafe fn resize_small(&mut self, block: *mut u8, from: usize, to: usize) -> *mut c_void {
        if to == from {
            return block.cast();
        }
        if to < from {
            // The block stays where it is; its end becomes a free block.
            // SAFETY: (1) `block` has `class_size(from)` bytes, so its tail from
            // `class_size(to)` on is `class_size(from - to - 1)` bytes no one uses;
            // (2) it starts at a multiple of `GRAIN` from an aligned block.
            unsafe { self.give(block.add(class_size(to)), from - to - 1) };
            return block.cast();
        }
        let new = self.take(to);
        if new.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: two distinct blocks of this heap; the old one has `class_size(from)`
        // bytes, all of which fit in the new one.
        unsafe {
            ptr::copy_nonoverlapping(block, new, class_size(from));
            self.give(block, from);
        }
        new.cast()
    }

    /// # Safety
    /// `block` is a small block of this heap that Lua knows as `osize` bytes.
    unsafe fn grow_to_large(&mut self, block: *mut u8, osize: usize, nsize: usize) -> *mut c_void {
        self.compact_for(nsize);
        // SAFETY: `malloc` has no preconditions.
        let new = unsafe { libc::malloc(nsize) }.cast::<u8>();
        if new.is_null() {
            return ptr::null_mut();
        }
        // SAFETY: `osize < nsize` bytes of the old block are Lua's, and fit in `new`.
        unsafe {
            ptr::copy_nonoverlapping(block, new, osize);
            self.give(block, class(osize));
        }
        new.cast()
    }

    /// # Safety
    /// `block` is a `malloc` block of more than `SMALL_MAX` bytes; `nsize` is at most
    /// `SMALL_MAX`.
    unsafe fn shrink_to_small(&mut self, block: *mut u8, nsize: usize) -> *mut c_void {
        let new = self.take(class(nsize));
        if new.is_null() {
            // A shrink must not fail, and Lua will give this block back as a small one.
            // So the heap adopts it: it holds more than any class, and when Lua frees
            // it, it is reused as a small block until the process ends (it is in no
            // chunk, so `drop` never frees it). Only when `malloc` refuses a chunk.
            return block.cast();
        }
        // SAFETY: `nsize` bytes are Lua's and fit in both blocks; the old block is a
        // `malloc` block no one uses after this.
        unsafe {
            ptr::copy_nonoverlapping(block, new, nsize);
            libc::free(block.cast());
        }
        new.cast()
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        let mut chunk = self.chunks;
        while !chunk.is_null() {
            // SAFETY: every chunk starts with the head `new_chunk` wrote, and came
            // from `malloc`; the state using the blocks is closed (the owner drops the
            // heap after `lua_close`).
            unsafe {
                let next = (*chunk).next;
                libc::free(chunk.cast());
                chunk = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// Makes `new_chunk` fail as when `malloc` refuses.
        pub static REFUSE_CHUNKS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// How many times `compact` ran on this thread.
        pub static JOINS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Checks the heap's bookkeeping against the blocks Lua holds (`live`: address and
    /// size as Lua knows it): every byte of every chunk is exactly one of its head, a
    /// live block, a free block or the unused end; no free block is listed twice or
    /// overlaps a live one; the counts agree.
    fn check_heap(h: &Heap, live: &[(*mut u8, usize)]) {
        let mut chunks = Vec::new();
        let mut c = h.chunks;
        while !c.is_null() {
            // SAFETY: a chunk of the heap.
            let (next, size) = unsafe { ((*c).next, (*c).size) };
            chunks.push((c as usize, size));
            c = next;
        }
        assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), h.held, "held");
        // (start, end, what): 0 head, 1 live, 2 free, 3 unused end.
        let mut spans: Vec<(usize, usize, u8)> =
            chunks.iter().map(|&(a, _)| (a, a + HEADER, 0)).collect();
        let mut free_total = 0;
        for k in 0..CLASSES {
            let mut p = h.free[k];
            while !p.is_null() {
                assert_eq!(p as usize % GRAIN, 0);
                spans.push((p as usize, p as usize + class_size(k), 2));
                free_total += class_size(k);
                // SAFETY: a free block's link.
                p = unsafe { (*p).next };
            }
        }
        assert_eq!(free_total, h.free_bytes, "free_bytes");
        if h.bump != h.end {
            let newest = h.chunks as usize;
            assert!(newest != 0 && h.bump as usize >= newest + HEADER);
            // SAFETY: reading the newest chunk's head.
            assert!(h.end as usize <= newest + unsafe { (*h.chunks).size });
            spans.push((h.bump as usize, h.end as usize, 3));
        }
        for &(p, n) in live {
            let n = if n <= h.small_max {
                class_size(class(n))
            } else {
                n
            };
            spans.push((p as usize, p as usize + n, 1));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap: {:x?} and {:x?}", w[0], w[1]);
        }
        // Each chunk is tiled exactly.
        for &(a, size) in &chunks {
            let from = spans.partition_point(|s| s.0 < a);
            let mut at = a;
            for s in &spans[from..] {
                if s.0 >= a + size {
                    break;
                }
                assert_eq!(s.0, at, "a gap in chunk {a:x} at {at:x}");
                at = s.1;
            }
            assert_eq!(at, a + size, "chunk {a:x} not covered to its end");
        }
    }

    /// A model of Lua's calls: random allocations, frees and resizes of every size,
    /// with joins forced far more often than the heap would run them, chunks refused
    /// now and then (large blocks shrunk to small ones are then adopted), each block's
    /// bytes checked and the whole heap's bookkeeping checked as it goes.
    #[test]
    fn forced_joins_and_refused_chunks_keep_the_heap_consistent() {
        fn fill(p: *mut u8, n: usize, byte: u8) {
            // SAFETY: a live block of at least `n` bytes.
            unsafe { ptr::write_bytes(p, byte, n) };
        }
        fn check(p: *mut u8, n: usize, byte: u8) {
            // SAFETY: a live block with `n` bytes written as `byte`.
            let s = unsafe { std::slice::from_raw_parts(p, n) };
            assert!(s.iter().all(|&b| b == byte), "block at {p:?} changed");
        }
        for seed0 in [1u64, 0x1234_5678, 0xdead_beef_cafe] {
            let mut h = Heap::new(true);
            let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
            let mut seed = seed0.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
            let mut rnd = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for step in 0..60_000u32 {
                let r = rnd();
                if r % 5000 == 0 {
                    REFUSE_CHUNKS.with(|c| c.set(!c.get()));
                }
                if r % 7 == 0 {
                    h.compact_at = 0;
                }
                if r % 331 == 0 {
                    h.compact();
                }
                let size = 1 + match (r >> 8) % 5 {
                    0 => (r >> 16) as usize % 32,
                    1 => (r >> 16) as usize % 2000,
                    _ => (r >> 16) as usize % 260,
                };
                let byte = (step % 251) as u8;
                let pick = (r >> 40) as usize % live.len().max(1);
                match (r >> 56) % 4 {
                    0 | 1 if live.len() < 1500 => {
                        let p = alloc(&mut h, size);
                        if !p.is_null() {
                            assert_eq!(p as usize % GRAIN, 0);
                            fill(p, size, byte);
                            live.push((p, size, byte));
                        }
                    }
                    0..=2 if !live.is_empty() => {
                        let (p, n, b) = live.swap_remove(pick);
                        check(p, n, b);
                        resize(&mut h, p, n, 0);
                    }
                    _ if !live.is_empty() => {
                        let (p, n, b) = live[pick];
                        let q = resize(&mut h, p, n, size);
                        if q.is_null() {
                            assert!(size > n, "a shrink failed");
                            check(p, n, b);
                        } else {
                            check(q, n.min(size), b);
                            fill(q, size, byte);
                            live[pick] = (q, size, byte);
                        }
                    }
                    _ => {}
                }
                if step % 97 == 0 {
                    let sizes: Vec<_> = live.iter().map(|&(p, n, _)| (p, n)).collect();
                    check_heap(&h, &sizes);
                }
            }
            REFUSE_CHUNKS.with(|c| c.set(false));
            for (p, n, b) in live {
                check(p, n, b);
                resize(&mut h, p, n, 0);
            }
            check_heap(&h, &[]);
        }
    }

    /// Lua's calls, in Lua's order: sizes as Lua keeps them.
    fn alloc(h: &mut Heap, n: usize) -> *mut u8 {
        // SAFETY: a new block.
        unsafe { h.realloc(ptr::null_mut(), 0, n) }.cast()
    }
    fn resize(h: &mut Heap, p: *mut u8, o: usize, n: usize) -> *mut u8 {
        // SAFETY: the tests pass blocks of this heap with their sizes.
        unsafe { h.realloc(p.cast(), o, n) }.cast()
    }

    #[test]
    fn blocks_are_aligned_and_disjoint() {
        let mut h = Heap::new(true);
        let mut blocks = Vec::new();
        for i in 0..5000usize {
            let n = 1 + (i * 37) % 400;
            let p = alloc(&mut h, n);
            assert_eq!(p as usize % GRAIN, 0);
            // SAFETY: `n` bytes of a fresh block.
            unsafe { ptr::write_bytes(p, (i % 251) as u8, n) };
            blocks.push((p, n, (i % 251) as u8));
        }
        for &(p, n, byte) in &blocks {
            // SAFETY: each block is live with `n` bytes.
            let s = unsafe { std::slice::from_raw_parts(p, n) };
            assert!(s.iter().all(|&b| b == byte), "a block was overwritten");
        }
        for (p, n, _) in blocks {
            resize(&mut h, p, n, 0);
        }
    }

    #[test]
    fn a_freed_block_is_reused_by_its_class() {
        let mut h = Heap::new(true);
        let a = alloc(&mut h, 40);
        resize(&mut h, a, 40, 0);
        assert_eq!(alloc(&mut h, 48), a);
    }

    #[test]
    fn resizing_keeps_contents_across_small_and_large() {
        let mut h = Heap::new(true);
        let mut p = alloc(&mut h, 20);
        // SAFETY: 20 bytes of a fresh block.
        unsafe { ptr::copy_nonoverlapping(b"abcdefghijklmnopqrst".as_ptr(), p, 20) };
        let mut size = 20;
        for n in [100, 300, 5000, 250, 30, 20] {
            p = resize(&mut h, p, size, n);
            size = n;
            // SAFETY: the block is live with at least 20 bytes.
            let s = unsafe { std::slice::from_raw_parts(p, 20) };
            assert_eq!(s, b"abcdefghijklmnopqrst");
        }
        resize(&mut h, p, size, 0);
    }

    #[test]
    fn a_larger_free_block_serves_a_smaller_class_before_a_new_chunk() {
        let mut h = Heap::new(true);
        let big = alloc(&mut h, 256);
        // Use up the rest of the chunk, so the next request cannot come from it.
        let mut fillers = Vec::new();
        while h.end as usize - h.bump as usize >= GRAIN {
            fillers.push(alloc(&mut h, 16));
        }
        let held = h.held;
        resize(&mut h, big, 256, 0);
        assert_eq!(alloc(&mut h, 100), big);
        // SAFETY: pointer arithmetic inside the 256-byte block.
        assert_eq!(alloc(&mut h, 140), unsafe { big.add(112) });
        assert_eq!(h.held, held, "no new chunk");
    }

    #[test]
    fn without_packing_every_block_is_mallocs_own() {
        let mut h = Heap::new(false);
        let p = alloc(&mut h, 24);
        let q = resize(&mut h, p, 24, 48);
        assert!(h.chunks.is_null() && h.held == 0);
        resize(&mut h, q, 48, 0);
    }

    #[test]
    fn a_shrunk_block_frees_its_tail() {
        let mut h = Heap::new(true);
        let p = alloc(&mut h, 256);
        assert_eq!(resize(&mut h, p, 256, 64), p);
        // The tail (192 bytes from offset 64) is a free block of its own class.
        // SAFETY: pointer arithmetic inside the 256-byte block.
        assert_eq!(alloc(&mut h, 192), unsafe { p.add(64) });
    }

    /// The defect this pins down: freed blocks served only their own class, so a state
    /// that made and dropped objects of each size in turn held the sum of all sizes'
    /// peaks. Now each size's blocks reuse the memory the last one freed.
    #[test]
    fn freed_small_blocks_serve_other_sizes_instead_of_new_chunks() {
        let mut h = Heap::new(true);
        let mut peak = 0;
        for k in 0..CLASSES {
            let n = class_size(k);
            let blocks: Vec<_> = (0..200_000 / n).map(|_| alloc(&mut h, n)).collect();
            peak = peak.max(h.held);
            for p in blocks {
                resize(&mut h, p, n, 0);
            }
        }
        // Before: about 16 times the first size's 200 kB.
        assert!(h.held < 2 * 200_000, "held {} bytes", h.held);
        assert!(peak < 2 * 200_000 + MAX_CHUNK, "peak {peak} bytes");
    }

    /// Joining free blocks moves nothing that is in use: blocks of every size live
    /// across many joins keep their bytes, and new blocks never overlap them.
    #[test]
    fn joining_free_blocks_keeps_live_blocks_intact() {
        let mut h = Heap::new(true);
        let mut live: Vec<(*mut u8, usize, u8)> = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..40usize {
            let n = class_size(round % CLASSES) - (round % 7);
            for i in 0..3000usize {
                let p = alloc(&mut h, n);
                let byte = (i % 251) as u8;
                // SAFETY: `n` bytes of a fresh block.
                unsafe { ptr::write_bytes(p, byte, n) };
                live.push((p, n, byte));
            }
            // Free most blocks, in a random order, keeping one in eight.
            let mut kept = Vec::new();
            for (p, n, byte) in live.drain(..) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                if seed % 8 == 0 {
                    kept.push((p, n, byte));
                } else {
                    resize(&mut h, p, n, 0);
                }
            }
            for &(p, n, byte) in &kept {
                // SAFETY: a live block of `n` bytes.
                let s = unsafe { std::slice::from_raw_parts(p, n) };
                assert!(s.iter().all(|&b| b == byte), "a live block changed");
            }
            live = kept;
        }
        for (p, n, _) in live {
            resize(&mut h, p, n, 0);
        }
    }

    /// The defect this pins down: a join walks every chunk, and it could run after
    /// every kilobyte freed, however big the heap. A heap of many chunks whose newest
    /// blocks die together (the join gives their chunk back, leaving nothing on the
    /// lists, so the next join was due after another kilobyte) joined once every ten
    /// allocations: 300 times slower than `malloc` with 1600 chunks. Now a join waits
    /// for a sixteenth of the heap to be free, which pays for the walk.
    #[test]
    fn joins_are_paid_by_bytes_freed_in_proportion_to_the_heap() {
        let mut h = Heap::new(true);
        let mut keep: Vec<_> = (0..200_000).map(|_| alloc(&mut h, 32)).collect();
        // The newest chunk full, as a state's heap is after a while.
        while h.end as usize - h.bump as usize >= GRAIN {
            keep.push(alloc(&mut h, 16));
        }
        // A join now, so that the next one is due after `MIN_CHUNK` bytes at most.
        let spare: Vec<_> = (0..200).map(|_| alloc(&mut h, 256)).collect();
        for p in spare {
            resize(&mut h, p, 256, 0);
        }
        let big = alloc(&mut h, 60_000);
        resize(&mut h, big, 60_000, 0);
        JOINS.with(|c| c.set(0));
        let rounds = 10_000;
        let mut young = Vec::new();
        for _ in 0..rounds {
            young.extend((0..9).map(|_| alloc(&mut h, 256)));
            for p in young.drain(..) {
                resize(&mut h, p, 256, 0);
            }
            let big = alloc(&mut h, 1000);
            resize(&mut h, big, 1000, 0);
        }
        let joins = JOINS.with(|c| c.get());
        assert!(joins < rounds / 100, "{joins} joins in {rounds} rounds");
        for p in keep {
            resize(&mut h, p, 32, 0);
        }
    }

    #[test]
    fn a_wholly_free_chunk_goes_back_to_malloc() {
        let mut h = Heap::new(true);
        let blocks: Vec<_> = (0..10_000).map(|_| alloc(&mut h, 32)).collect();
        let held = h.held;
        for p in blocks {
            resize(&mut h, p, 32, 0);
        }
        // A large block asks for what the free blocks add up to: they are joined
        // first, and the chunks, wholly free, are `malloc`'s again.
        let big = alloc(&mut h, 100_000);
        assert!(h.held < held / 4, "held {} of {held} bytes", h.held);
        resize(&mut h, big, 100_000, 0);
    }
}
