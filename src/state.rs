//! The child's Lua state as an owned value: created fresh, closed exactly once on drop.
//!
//! Optionally the state gets an allocator that refuses to grow past a byte budget
//! (`llthreads.set_memory_limit`, PUC Lua only: LuaJIT's 64-bit GC cannot take a
//! custom allocator).

#[cfg(feature = "lua54")]
use std::cell::Cell;
#[cfg(feature = "lua54")]
use std::ffi::{c_char, CStr};
#[cfg(not(feature = "luajit"))]
use std::ffi::{c_int, c_void};

use mlua::ffi;

use crate::raw::RawState;

/// The allocator's bookkeeping for a state with a memory limit.
#[cfg_attr(feature = "luajit", allow(dead_code))]
struct Budget {
    limit: usize,
    used: usize,
}

/// An open Lua state owned by exactly one side (parent or child) at a time.
pub struct ChildState {
    raw: RawState,
    /// Lives as long as the state: the allocator points into it.
    budget: Option<Box<Budget>>,
    /// Lives as long as the state: its warning function points into it.
    #[cfg(feature = "lua54")]
    warnings: Option<Box<Cell<Warnings>>>,
}

// SAFETY: a Lua state has no thread affinity; it only must not be used by two threads
// at once. `ChildState` is the unique owner, and ownership moves with the value.
unsafe impl Send for ChildState {}

impl ChildState {
    /// Creates a fresh, empty state (no libraries yet). `limit` is the allocator budget
    /// in bytes, `None` for the host's usual allocator. Returns `None` when Lua cannot
    /// allocate the state.
    pub fn new(limit: Option<usize>) -> Option<ChildState> {
        match limit {
            None => {
                // SAFETY: `luaL_newstate` has no preconditions; it returns null on failure.
                let raw = unsafe { ffi::luaL_newstate() };
                (!raw.is_null()).then_some(ChildState {
                    raw,
                    budget: None,
                    #[cfg(feature = "lua54")]
                    warnings: None,
                })
            }
            Some(limit) => Self::with_budget(limit),
        }
    }

    #[cfg(not(feature = "luajit"))]
    fn with_budget(limit: usize) -> Option<ChildState> {
        let mut budget = Box::new(Budget { limit, used: 0 });
        let ud = &mut *budget as *mut Budget as *mut c_void;
        // SAFETY: `limited_alloc` follows the `lua_Alloc` contract and `ud` points to the
        // boxed budget, which this value keeps alive until after `lua_close`.
        let raw = unsafe { ffi::lua_newstate(limited_alloc, ud) };
        if raw.is_null() {
            return None;
        }
        // SAFETY: `raw` is a fresh valid state; setting the panic function cannot raise.
        unsafe { ffi::lua_atpanic(raw, panic_handler) };
        // `lua_newstate` installs no warning function (`luaL_newstate` does): without
        // one, `warn` would print nothing in a limited state.
        #[cfg(feature = "lua54")]
        let warnings = {
            let warnings = Box::new(Cell::new(Warnings::Off));
            let ud = &*warnings as *const Cell<Warnings> as *mut c_void;
            // SAFETY: `warn` follows the `lua_WarnFunction` contract and `ud` points
            // to the boxed mode, which this value keeps alive until after `lua_close`.
            unsafe { ffi::lua_setwarnf(raw, Some(warn), ud) };
            Some(warnings)
        };
        Some(ChildState {
            raw,
            budget: Some(budget),
            #[cfg(feature = "lua54")]
            warnings,
        })
    }

    #[cfg(feature = "luajit")]
    fn with_budget(_limit: usize) -> Option<ChildState> {
        // The API refuses limits on LuaJIT before getting here.
        None
    }

    pub fn raw(&self) -> RawState {
        self.raw
    }
}

impl Drop for ChildState {
    fn drop(&mut self) {
        // SAFETY: this value is the state's only owner and no other thread uses it now
        // (the child thread has finished with it, or never started). Removing the hook
        // first keeps a late interrupt from raising inside finalizers run by
        // `lua_close`, which itself runs them under protection and does not raise.
        unsafe {
            ffi::lua_sethook(self.raw, None, 0, 0);
            ffi::lua_close(self.raw);
        }
        // `budget` (and the warning mode) drop after the state that used them.
        let _ = self.budget.take();
        #[cfg(feature = "lua54")]
        let _ = self.warnings.take();
    }
}

/// `lua_Alloc` with a byte budget: growth past the limit is refused (Lua then raises
/// "not enough memory"); shrinking and freeing always succeed, as Lua requires.
///
/// # Safety
/// `ud` points to the `Budget` of the state calling it; Lua serialises calls per state.
#[cfg(not(feature = "luajit"))]
unsafe extern "C" fn limited_alloc(
    ud: *mut c_void,
    ptr: *mut c_void,
    osize: usize,
    nsize: usize,
) -> *mut c_void {
    // SAFETY: (1) `ud` is the boxed budget, alive while the state is (see `ChildState`);
    // (2) only the thread currently using the state calls its allocator, so the
    // exclusive borrow is unique; (3) `ptr` was returned by this allocator (or is null),
    // so `realloc`/`free` apply.
    unsafe {
        let budget = &mut *(ud as *mut Budget);
        // For a new block (`ptr` null) Lua 5.4 passes a type tag in `osize`.
        let old = if ptr.is_null() { 0 } else { osize };
        if nsize == 0 {
            libc::free(ptr);
            budget.used -= old;
            return std::ptr::null_mut();
        }
        if nsize > old && budget.used - old + nsize > budget.limit {
            return std::ptr::null_mut();
        }
        let new = libc::realloc(ptr, nsize);
        if !new.is_null() {
            budget.used = budget.used - old + nsize;
        }
        new
    }
}

/// Panic function for states made with `lua_newstate` (which, unlike `luaL_newstate`,
/// installs none). Only reachable through a bug: every call that can raise on a child
/// state runs protected.
#[cfg(not(feature = "luajit"))]
unsafe extern "C-unwind" fn panic_handler(l: RawState) -> c_int {
    // SAFETY: Lua calls this with the error object on top of `l`.
    let msg = unsafe { crate::raw::string_at(l, -1) }.unwrap_or(b"(error object is not a string)");
    let mut err = std::io::stderr().lock();
    let _ = std::io::Write::write_all(&mut err, b"PANIC: unprotected error in call to Lua API (");
    let _ = std::io::Write::write_all(&mut err, msg);
    let _ = std::io::Write::write_all(&mut err, b")\n");
    0
}

/// Where the warning function of a limited 5.4 state stands.
#[cfg(feature = "lua54")]
#[derive(Clone, Copy, PartialEq, Eq)]
enum Warnings {
    /// Warnings are dropped (the start, and after `"@off"`).
    Off,
    /// Warnings are written to stderr (after `"@on"`).
    On,
    /// In the middle of a warning given in pieces: the next piece continues it.
    Continuing,
}

/// The warning function of a limited 5.4 state, behaving as the one `luaL_newstate`
/// installs: off until `warn("@on")`, back off with `"@off"` (other messages starting
/// with `@` are controls too, and ignored); when on, each warning goes to stderr as
/// `Lua warning: <pieces...>` and a newline.
///
/// # Safety
/// `ud` points to the state's `Cell<Warnings>`; `msg` is a NUL-terminated string. Lua
/// calls it on the thread using the state, one call at a time.
#[cfg(feature = "lua54")]
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
