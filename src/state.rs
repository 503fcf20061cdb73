//! The child's Lua state as an owned value: created fresh, closed exactly once on drop.
//!
//! Every state gets this library's allocator: Lua's small objects are packed into
//! chunks the state owns ([`Heap`]), which makes a fresh state a fifth smaller than
//! with `malloc` for each object, and the allocator keeps a byte count with an optional
//! budget (`llthreads.set_memory_limit`, refused on LuaJIT by the API) past which
//! growth is refused. A state's own budget is found again from its allocator
//! ([`budget_limit`]), which Lua code cannot change: `new` uses it as the ceiling for
//! the states that state creates.

#[cfg(any(feature = "lua54", feature = "lua55"))]
use std::cell::Cell;
#[cfg(any(feature = "lua54", feature = "lua55"))]
use std::ffi::{c_char, CStr};
use std::ffi::{c_int, c_void};
use std::ptr::NonNull;

use mlua::ffi;

use crate::heap::Heap;
use crate::raw::RawState;

/// The allocator's count and budget. Its layout is shared with every other copy of
/// this library loaded in the process (see [`budget_limit`]): a change to it needs a
/// new [`BUDGET_ALLOC`] name. A `limit` of `usize::MAX` is no limit.
#[repr(C)]
struct Budget {
    limit: usize,
    used: usize,
}

/// The exported name of the budget allocator, versioned with [`Budget`]'s layout.
const BUDGET_ALLOC: &std::ffi::CStr = c"llthreads_budget_alloc_v1";

/// What a state's callbacks point into, in one block: the allocator's budget (first:
/// the allocator's `ud` is this block's address, and other copies of the library read
/// the budget there), its heap and, on 5.4 and 5.5, the warning mode.
#[repr(C)]
struct Owned {
    budget: Budget,
    heap: Heap,
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    warnings: Cell<Warnings>,
}

/// An open Lua state owned by exactly one side (parent or child) at a time.
pub struct ChildState {
    /// Never null: `Option<ChildState>` costs nothing more (a thread object keeps one).
    raw: NonNull<ffi::lua_State>,
    /// Lives as long as the state: its allocator and warning function point into it.
    /// `None` only for a LuaJIT built without 64-bit GC references, which takes no
    /// allocator but its own.
    owned: Option<Box<Owned>>,
}

// SAFETY: a Lua state has no thread affinity; it only must not be used by two threads
// at once. `ChildState` is the unique owner, and ownership moves with the value (the
// heap is plain memory used by whichever thread runs the state).
unsafe impl Send for ChildState {}

/// Set once a LuaJIT build refused `lua_newstate` (it printed why on stderr): later
/// states use `luaL_newstate` without asking again.
#[cfg(feature = "luajit")]
static NO_CUSTOM_ALLOCATOR: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Whether states pack small objects ([`Heap`]): yes unless the environment has
/// `LLTHREADS_MALLOC=system` when the first state is made, for memory checkers that
/// watch each `malloc` block.
fn packed_heap() -> bool {
    static PACKED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PACKED.get_or_init(|| std::env::var_os("LLTHREADS_MALLOC").is_none_or(|v| v != "system"))
}

impl ChildState {
    /// Creates a fresh, empty state (no libraries yet). `limit` is the allocator budget
    /// in bytes, `None` for none. Returns `None` when Lua cannot allocate the state.
    pub fn new(limit: Option<usize>) -> Option<ChildState> {
        #[cfg(feature = "luajit")]
        if NO_CUSTOM_ALLOCATOR.load(std::sync::atomic::Ordering::Relaxed) {
            // SAFETY: `luaL_newstate` has no preconditions; it returns null on failure.
            let raw = NonNull::new(unsafe { ffi::luaL_newstate() })?;
            return Some(ChildState { raw, owned: None });
        }
        let mut owned = Box::new(Owned {
            budget: Budget {
                limit: limit.unwrap_or(usize::MAX),
                used: 0,
            },
            heap: Heap::new(packed_heap()),
            // 5.4's `luaL_newstate` starts with warnings off, 5.5's with them on.
            #[cfg(feature = "lua54")]
            warnings: Cell::new(Warnings::Off),
            #[cfg(feature = "lua55")]
            warnings: Cell::new(Warnings::On),
        });
        let ud = &mut *owned as *mut Owned as *mut c_void;
        // SAFETY: `llthreads_budget_alloc_v1` follows the `lua_Alloc` contract and `ud` points to the
        // boxed `Owned`, which this value keeps alive until after `lua_close`.
        #[cfg(not(feature = "lua55"))]
        let raw = unsafe { ffi::lua_newstate(llthreads_budget_alloc_v1, ud) };
        // 5.5's `lua_newstate` takes the seed for string hashing and the first GC
        // randomisation; `luaL_newstate` asks the host's `luaL_makeseed`, so ours gets
        // the same kind of seed (random per state).
        // SAFETY: as above; `luaL_makeseed` accepts a null state and only reads the
        // clock and an address.
        #[cfg(feature = "lua55")]
        let raw = unsafe {
            let seed = ffi::luaL_makeseed_(std::ptr::null_mut());
            ffi::lua_newstate(llthreads_budget_alloc_v1, ud, seed)
        };
        #[cfg(feature = "luajit")]
        if raw.is_null() && limit.is_none() {
            // A LuaJIT without 64-bit GC references refuses other allocators.
            NO_CUSTOM_ALLOCATOR.store(true, std::sync::atomic::Ordering::Relaxed);
            return Self::new(None);
        }
        let raw = NonNull::new(raw)?;
        // SAFETY: `raw` is a fresh valid state; setting the panic function cannot raise.
        unsafe { ffi::lua_atpanic(raw.as_ptr(), panic_handler) };
        // `lua_newstate` installs no warning function (`luaL_newstate` does): without
        // one, `warn` would print nothing.
        #[cfg(any(feature = "lua54", feature = "lua55"))]
        {
            let ud = &owned.warnings as *const Cell<Warnings> as *mut c_void;
            // SAFETY: `warn` follows the `lua_WarnFunction` contract and `ud` points
            // to the boxed mode, which this value keeps alive until after `lua_close`.
            unsafe { ffi::lua_setwarnf(raw.as_ptr(), Some(warn), ud) };
        }
        Some(ChildState {
            raw,
            owned: Some(owned),
        })
    }

    pub fn raw(&self) -> RawState {
        self.raw.as_ptr()
    }

    /// The bytes the state holds: what it uses now, as its allocator counts them
    /// (every allocation, including what Lua's collector does not count, such as 5.5's
    /// external strings), plus the free memory its heap keeps for its next objects;
    /// `None` when the state has LuaJIT's own allocator.
    ///
    /// Only the thread using the state may call this (the allocator updates the counts
    /// without synchronisation).
    pub fn held(&self) -> Option<usize> {
        self.owned.as_ref().map(|o| o.budget.used + o.heap.unused())
    }
}

impl Drop for ChildState {
    fn drop(&mut self) {
        // SAFETY: this value is the state's only owner and no other thread uses it now
        // (the child thread has finished with it, or never started). Removing the hook
        // first keeps a late interrupt from raising inside finalizers run by
        // `lua_close`, which itself runs them under protection and does not raise.
        unsafe {
            ffi::lua_sethook(self.raw.as_ptr(), None, 0, 0);
            ffi::lua_close(self.raw.as_ptr());
        }
        // The heap, budget and warning mode drop after the state that used them.
        let _ = self.owned.take();
    }
}

/// `lua_Alloc` of every state this library makes: the state's [`Heap`], with a byte
/// budget (growth past the limit is refused, and Lua then raises "not enough
/// memory"; shrinking and freeing always succeed, as Lua requires).
///
/// # Safety
/// `ud` points to the `Owned` of the state calling it; Lua serialises calls per state.
///
/// Exported under a versioned name ([`BUDGET_ALLOC`]) so that another copy of this
/// library (`llthreads.so` and `llthreads2.so` are two files) recognises its states.
#[no_mangle]
unsafe extern "C" fn llthreads_budget_alloc_v1(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: (1) `ud` is the boxed `Owned`, alive while the state is (see
    // `ChildState`); (2) only the thread currently using the state calls its
    // allocator, so the exclusive borrows are unique; they cover the budget and the
    // heap only, not the warning mode, which the warning function reaches through a
    // pointer of its own; (3) `ptr` was returned by this allocator (or is null) and
    // Lua passes its size as `osize`, as `Heap` requires.
    unsafe {
        let owned = ud as *mut Owned;
        let budget = &mut *std::ptr::addr_of_mut!((*owned).budget);
        let heap = &mut *std::ptr::addr_of_mut!((*owned).heap);
        // For a new block (`ptr` null) Lua 5.4 passes a type tag in `osize`.
        let old = if ptr.is_null() { 0 } else { osize };
        if nsize > old && budget.used - old + nsize > budget.limit {
            return std::ptr::null_mut();
        }
        let new = heap.realloc(ptr, old, nsize);
        if !new.is_null() || nsize == 0 {
            budget.used = budget.used - old + nsize;
        }
        new
    }
}

/// The byte budget of the state `l` (a coroutine stands for its main state) when a
/// copy of this library created it with one; `None` for any other state.
///
/// # Safety
/// `l` is a valid state that the calling thread is running now.
pub unsafe fn budget_limit(l: RawState) -> Option<usize> {
    let mut ud: *mut c_void = std::ptr::null_mut();
    // SAFETY: `lua_getallocf` only reads the state's global fields; it cannot raise.
    let alloc = unsafe { ffi::lua_getallocf(l, &mut ud) };
    let ours: ffi::lua_Alloc = llthreads_budget_alloc_v1;
    let is_budget = std::ptr::fn_addr_eq(alloc, ours) || is_budget_alloc_of_another_copy(alloc);
    if !is_budget || ud.is_null() {
        return None;
    }
    // SAFETY: (1) a budget allocator is only ever installed by `ChildState::new` (of
    // this or another copy: same name, same layout), with `ud` pointing to the state's
    // `Budget`, alive as long as the state; (2) `limit` changes only inside
    // `unbounded`, on the thread using the state, which is this one; `used` (written
    // by the allocator, on this same thread) is not read.
    let limit = unsafe { std::ptr::addr_of!((*(ud as *const Budget)).limit).read() };
    (limit != usize::MAX).then_some(limit)
}

/// Runs `f` with the memory limit of `l` lifted, when `l` has one (its allocator
/// still counts every byte). For Lua 5.5's `lua_dump`, which allocates in the state
/// dumped from (a table of the strings already written) and would raise "not enough
/// memory" there, outside any protected call of ours, in a state near its limit.
/// Nothing in the dump runs the collector, so no Lua code runs meanwhile; the bytes
/// are counted and the next allocation past the limit is refused as usual.
///
/// # Safety
/// `l` is valid and used by this thread only, for the whole of `f`; `f` does not
/// panic.
#[cfg(feature = "lua55")]
pub unsafe fn unbounded<T>(l: RawState, f: impl FnOnce() -> T) -> T {
    let mut ud: *mut c_void = std::ptr::null_mut();
    // SAFETY: `lua_getallocf` only reads the state's global fields.
    let alloc = unsafe { ffi::lua_getallocf(l, &mut ud) };
    let ours: ffi::lua_Alloc = llthreads_budget_alloc_v1;
    let is_budget = std::ptr::fn_addr_eq(alloc, ours) || is_budget_alloc_of_another_copy(alloc);
    if !is_budget || ud.is_null() {
        return f();
    }
    let budget = ud as *mut Budget;
    // SAFETY: (1) a budget allocator's `ud` is the state's `Budget` (see
    // `budget_limit`), alive as long as the state; (2) only the thread using the
    // state touches it, and that is this thread for the whole call.
    unsafe {
        let limit = (*budget).limit;
        (*budget).limit = usize::MAX;
        let value = f();
        (*budget).limit = limit;
        value
    }
}

/// Whether `alloc` is the budget allocator of another copy of this library: the
/// dynamic symbol at that address has the versioned name.
fn is_budget_alloc_of_another_copy(alloc: ffi::lua_Alloc) -> bool {
    // SAFETY: `dladdr` only reads the loader's tables; on success `dli_sname` is null
    // or a NUL-terminated name owned by the loader, valid while the object is loaded
    // (it is: a state allocates with it).
    unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(alloc as *const c_void, &mut info) == 0
            || info.dli_sname.is_null()
            || info.dli_saddr != alloc as *mut c_void
        {
            return false;
        }
        std::ffi::CStr::from_ptr(info.dli_sname) == BUDGET_ALLOC
    }
}

/// Panic function for our states (`lua_newstate`, unlike `luaL_newstate`, installs
/// none), with the stock one's message. Only reachable through a bug: every call that
/// can raise on a child state runs protected.
unsafe extern "C-unwind" fn panic_handler(l: RawState) -> c_int {
    // SAFETY: Lua calls this with the error object on top of `l`.
    let msg = unsafe { crate::raw::string_at(l, -1) }.unwrap_or(b"(error object is not a string)");
    let mut err = std::io::stderr().lock();
    let _ = std::io::Write::write_all(&mut err, b"PANIC: unprotected error in call to Lua API (");
    let _ = std::io::Write::write_all(&mut err, msg);
    let _ = std::io::Write::write_all(&mut err, b")\n");
    0
}

/// Where the warning function of a 5.4 or 5.5 state stands.
#[cfg(any(feature = "lua54", feature = "lua55"))]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Warnings {
    /// Warnings are dropped (the start, and after `"@off"`).
    Off,
    /// Warnings are written to stderr (after `"@on"`).
    On,
    /// In the middle of a warning given in pieces: the next piece continues it.
    Continuing,
}

/// The warning function of our 5.4 and 5.5 states, behaving as the one
/// `luaL_newstate` installs: (5.4) off until `warn("@on")` (5.5: on from the start),
/// back off with `"@off"` (other messages starting
/// with `@` are controls too, and ignored); when on, each warning goes to stderr as
/// `Lua warning: <pieces...>` and a newline.
///
/// # Safety
/// `ud` points to the state's `Cell<Warnings>`; `msg` is a NUL-terminated string. Lua
/// calls it on the thread using the state, one call at a time.
#[cfg(any(feature = "lua54", feature = "lua55"))]
unsafe extern "C-unwind" fn warn(ud: *mut c_void, msg: *const c_char, tocont: c_int) {
    use std::io::Write;
    // SAFETY: see the function's contract; the cell is only touched from this state's
    // thread, so the shared borrow never overlaps a write from elsewhere.
    let (mode, msg) = unsafe {
        (
            &*(ud as *const Cell<Warnings>),
            CStr::from_ptr(msg).to_bytes(),
        )
    };
    let more = tocont != 0;
    let mut err = std::io::stderr().lock();
    if mode.get() == Warnings::Continuing {
        let _ = err.write_all(msg);
    } else {
        if let (false, Some(control)) = (more, msg.strip_prefix(b"@")) {
            match control {
                b"on" => mode.set(Warnings::On),
                b"off" => mode.set(Warnings::Off),
                _ => {}
            }
            return;
        }
        if mode.get() == Warnings::Off {
            return;
        }
        let _ = err.write_all(b"Lua warning: ");
        let _ = err.write_all(msg);
    }
    if more {
        mode.set(Warnings::Continuing);
    } else {
        let _ = err.write_all(b"\n");
        mode.set(Warnings::On);
    }
    let _ = err.flush();
}
