//! The child runtime: what runs on the new OS thread.
//!
//! The child state's stack, prepared by `new`, is laid out as [`Frame`] says. The chunk
//! runs under `lua_pcall` with the message handler; an error is reported through
//! the child state's logger; then, depending on the mode, the child closes its own
//! state or leaves it (with the results on its stack) for the parent's `join`.

use std::ffi::c_int;
use std::io::{self, Write};
use std::sync::Arc;

use mlua::ffi;

use crate::copy::SOURCE_SLOTS;
use crate::coroutine;
use crate::names::LOGGER_FIELD;
use crate::pool;
use crate::raw::{protected, string_at, RawState};
use crate::record::Record;
use crate::state::ChildState;

/// The child state's stack from `new` to `join`: `[handler, chunk, args...]` before
/// the chunk runs, `[handler, results...]` (or `[handler, error]`) after.
pub struct Frame;

impl Frame {
    /// The message handler the chunk runs under.
    pub const HANDLER: c_int = 1;
    /// The compiled chunk.
    pub const CHUNK: c_int = 2;
    /// The chunk's first argument; the rest follow up to the top.
    pub const FIRST_ARG: c_int = 3;
    /// After the run, the first result (or the error object); the rest up to the top.
    pub const FIRST_RESULT: c_int = 2;
}

/// Who closes the child state when the chunk is done.
pub enum Owner {
    /// The child thread closes it (every mode but attached + joinable).
    Child(ChildState),
    /// The parent keeps it, and the results on it, for `join`.
    Parent(RawState),
}

/// A raw state pointer handed to the child thread while the parent keeps ownership.
struct Lent(RawState);

// SAFETY: the parent does not use the state between `start` and the moment the record
// says the child finished; interrupts reach it only through a signal handled on the
// child's own thread (see `interrupt.rs`).
unsafe impl Send for Lent {}

/// Runs the chunk prepared on `owner`'s state on the reserved worker thread.
pub fn spawn(worker: pool::Reserved, owner: Owner, record: Arc<Record>) {
    match owner {
        Owner::Child(state) => worker.run(Box::new(move || {
            let guard = FinishOnUnwind(&record);
            let status = run_chunk(state.raw(), &record);
            drop(state);
            log::debug!("child thread closed its own state");
            guard.finish(status);
        })),
        Owner::Parent(raw) => {
            let lent = Lent(raw);
            worker.run(Box::new(move || {
                let lent = lent;
                let guard = FinishOnUnwind(&record);
                let status = run_chunk(lent.0, &record);
                guard.finish(status);
            }))
        }
    }
}

/// Marks the record finished even if the child runtime panicked (a bug), so that a
/// `join` waiting on it returns an error instead of hanging.
struct FinishOnUnwind<'a>(&'a Record);

impl FinishOnUnwind<'_> {
    fn finish(self, status: c_int) {
        self.0.finish(status);
        std::mem::forget(self);
    }
}

impl Drop for FinishOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.finish(ffi::LUA_ERRRUN);
    }
}

/// Runs the chunk and reports its error; returns the chunk's `lua_pcall` status.
fn run_chunk(l: RawState, record: &Record) -> c_int {
    let mut status = ffi::LUA_OK;
    let mut body = |l: RawState| -> c_int {
        // SAFETY: runs protected on `l`, which only this thread uses; the frame holds
        // the stack exactly as `new` left it (see `Frame`).
        unsafe {
            let nargs = ffi::lua_gettop(l) - (Frame::FIRST_ARG - 1);
            // Before any code of the chunk's: interrupts then follow its coroutines.
            // Before `enter` too: installing may call a stock function, where a
            // pending interrupt must not fire.
            coroutine::install(l);
            record.enter(l);
            status = ffi::lua_pcall(l, nargs, ffi::LUA_MULTRET, Frame::HANDLER);
            // Room for the parent to read the results without growing this stack
            // later, when growing could raise outside any protected call.
            ffi::luaL_checkstack(l, SOURCE_SLOTS + 8, c"no room for results".as_ptr());
            if status != ffi::LUA_OK && ffi::lua_type(l, -1) == ffi::LUA_TNUMBER {
                // Messages are read as strings; convert here, where it may allocate.
                ffi::lua_tolstring(l, -1, std::ptr::null_mut());
            }
            ffi::lua_gettop(l)
        }
    };
    // SAFETY: (1) this thread is the only user of `l` until `record.finish`; (2) the
    // stack is laid out as `Frame` says, with free slots left by `new`; (3) the
    // body owns nothing and does not panic.
    let outer = unsafe { protected(l, ffi::lua_gettop(l), ffi::LUA_MULTRET, &mut body) };
    if outer != ffi::LUA_OK {
        // Only installing the coroutine functions or growing the stack can fail here
        // (out of memory): report that instead.
        status = outer;
    }
    // SAFETY: same thread and state as `enter` (which may not have run, if installing
    // failed: then this only clears what is clear). The hooks go, so a pending
    // interrupt cannot fire in the logger or in finalizers.
    unsafe { record.code_ended(l) };
    if status != ffi::LUA_OK {
        // SAFETY: same exclusive use of `l`; the error object is on top.
        unsafe { report_error(l) };
    }
    status
}

/// Passes `"Error from thread: " .. msg` to the state's logger, or writes it to stderr
/// when there is none. An error raised by the logger is swallowed.
///
/// # Safety
/// `l` is used by this thread only, with the error object on top and two free slots.
unsafe fn report_error(l: RawState) {
    let mut logger_failed = false;
    let mut body = |l: RawState| -> c_int {
        // SAFETY: runs protected on `l` (see `protected`); the error object is arg 1.
        unsafe {
            match ffi::lua_type(l, 1) {
                ffi::LUA_TSTRING | ffi::LUA_TNUMBER => {
                    ffi::lua_pushstring(l, c"Error from thread: ".as_ptr());
                    ffi::lua_pushvalue(l, 1);
                    ffi::lua_concat(l, 2);
                }
                _ => {
                    ffi::lua_pushstring(l, c"Error from thread: (no error message)".as_ptr());
                }
            }
            ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, LOGGER_FIELD.as_ptr());
            if ffi::lua_type(l, -1) == ffi::LUA_TNIL {
                ffi::lua_settop(l, -2);
                return 1; // the message, for stderr
            }
            ffi::lua_insert(l, -2);
            if ffi::lua_pcall(l, 1, 0, 0) != ffi::LUA_OK {
                logger_failed = true;
            }
            0
        }
    };
    // SAFETY: the caller's contract; the body owns nothing and does not panic.
    unsafe {
        let base = ffi::lua_gettop(l);
        ffi::lua_pushvalue(l, -1);
        let status = protected(l, 1, ffi::LUA_MULTRET, &mut body);
        if status == ffi::LUA_OK {
            if let Some(msg) = string_at(l, -1).filter(|_| ffi::lua_gettop(l) > base) {
                let mut err = io::stderr().lock();
                let _ = err.write_all(msg);
                let _ = err.write_all(b"\n");
                let _ = err.flush();
            }
        } else {
            log::warn!("could not report a child's error (status {status})");
        }
        if logger_failed {
            log::warn!("the child's logger raised an error; swallowed");
        }
        ffi::lua_settop(l, base);
    }
}
