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

use crate::copy::{reserve, SOURCE_SLOTS};
use crate::errors::{describe_error, NO_MESSAGE};
use crate::names::{Text, ThreadName, LOGGER_FIELD};
use crate::pool;
use crate::raw::{protected, push_bytes, string_at, RawState};
use crate::record::Record;
use crate::state::ChildState;

/// The child state's stack from `new` to `join`: `[handler, chunk, args...]` before
/// the chunk runs, `[handler, results...]` (or `[handler, error, its text]`) after.
pub struct Frame;

impl Frame {
    /// The message handler the chunk runs under.
    pub const HANDLER: c_int = 1;
    /// The compiled chunk.
    pub const CHUNK: c_int = 2;
    /// The chunk's first argument; the rest follow up to the top.
    pub const FIRST_ARG: c_int = 3;
    /// After the run, the first result; the rest up to the top. (After an error the
    /// error's text is on top.)
    pub const FIRST_RESULT: c_int = 2;
}

/// Who closes the child state when the chunk is done.
pub enum Owner {
    /// The child thread closes it (every mode but attached + joinable).
    Child(ChildState),
    /// The parent keeps it, and the results on it, for `join`.
    Parent(RawState),
}

/// `what: ` or, for a named thread, `what 'name': `: how an error from it begins.
pub fn error_prefix(what: &[u8], name: Option<&ThreadName>) -> Text {
    let mut text = Text::new("");
    text.push(what);
    if let Some(name) = name {
        text.push(b" '");
        text.push(name.as_bytes());
        text.push(b"'");
    }
    text.push(b": ");
    text
}

/// A raw state pointer handed to the child thread while the parent keeps ownership.
struct Lent(RawState);

// SAFETY: the parent does not use the state between `start` and the moment the record
// says the child finished; interrupts reach it only through a signal handled on the
// child's own thread (see `interrupt.rs`).
unsafe impl Send for Lent {}

/// Runs the chunk prepared on `owner`'s state on the reserved worker thread, which
/// carries `name` (as the OS shows it) while the chunk runs.
pub fn spawn(
    worker: pool::Reserved,
    owner: Owner,
    record: Arc<Record>,
    name: Option<Box<ThreadName>>,
) {
    match owner {
        // The worker goes back to the pool before the record says "finished", so a
        // parent that sees it finished and then closes finds the worker parked.
        Owner::Child(state) => worker.run(Box::new(move |handback: pool::Handback<'_>| {
            let status = named(name.as_deref(), || {
                run_chunk(state.raw(), &record, name.as_deref())
            });
            drop(state);
            log::debug!("child thread closed its own state");
            handback.then(|| record.finish(status));
        })),
        Owner::Parent(raw) => {
            let lent = Lent(raw);
            worker.run(Box::new(move |handback: pool::Handback<'_>| {
                let lent = lent;
                let status = named(name.as_deref(), || {
                    run_chunk(lent.0, &record, name.as_deref())
                });
                handback.then(|| record.finish(status));
            }))
        }
    }
}

/// Runs `f` with this OS thread named `name` (when there is one), then gives the
/// thread its name back: pooled workers serve other threads next.
fn named<T>(name: Option<&ThreadName>, f: impl FnOnce() -> T) -> T {
    let Some(name) = name else {
        return f();
    };
    let mut old = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into `old`;
    // PR_SET_NAME reads a NUL-terminated string of which it keeps 15 bytes.
    unsafe {
        libc::prctl(libc::PR_GET_NAME, old.as_mut_ptr());
        libc::prctl(libc::PR_SET_NAME, name.as_cstr().as_ptr());
    }
    let value = f();
    // SAFETY: as above; `old` is NUL-terminated (the kernel wrote at most 15 bytes).
    unsafe { libc::prctl(libc::PR_SET_NAME, old.as_ptr()) };
    value
}

/// Runs the chunk and reports its error; returns the chunk's `lua_pcall` status.
///
/// The chunk is called straight from the state's base level, with nothing of the
/// library's below it: a traceback ends at the chunk's own frame, and a stack that
/// holds the results or the arguments is limited by Lua's size only.
fn run_chunk(l: RawState, record: &Record, name: Option<&ThreadName>) -> c_int {
    // SAFETY: (1) this thread is the only user of `l` until `record.finish`; (2) the
    // stack is laid out as `Frame` says; (3) `lua_pcall` catches every error the chunk
    // raises (it never raises itself), and this frame owns nothing.
    let mut status = unsafe {
        record.enter(l);
        let nargs = ffi::lua_gettop(l) - (Frame::FIRST_ARG - 1);
        ffi::lua_pcall(l, nargs, ffi::LUA_MULTRET, Frame::HANDLER)
    };
    // SAFETY: same thread and state as `enter`. The hooks go, so a pending interrupt
    // cannot fire in what follows: the error's `__tostring`, the logger, finalizers.
    unsafe { record.code_ended(l) };
    if status == ffi::LUA_OK {
        // SAFETY: same exclusive use of `l`; `reserve` never raises.
        status = unsafe { keep_room_for_results(l) };
    } else {
        // The error object stays below its description until the state closes: once
        // unreachable, a finalizer of its own could fire inside the logger and, on
        // 5.2 and 5.3, raise there, so the logger would never see the message.
        // SAFETY: same exclusive use of `l`; the stack is `[handler, error]`, far
        // below the room Lua gives the base level.
        unsafe {
            ffi::lua_pushvalue(l, -1);
            describe_error(l);
        }
    }
    if status != ffi::LUA_OK {
        // SAFETY: same exclusive use of `l`; the error object is on top, with room.
        unsafe { report_error(l, name) };
    }
    status
}

/// Leaves room above the results for the parent to read them in `join` without
/// growing this stack then, when growing could raise outside any protected call.
/// When even that room is missing (a chunk that returned about as many values as a
/// stack holds), the results are replaced by an error. Returns the run's status.
///
/// # Safety
/// `l` is used by this thread only and holds `[handler, results...]`.
unsafe fn keep_room_for_results(l: RawState) -> c_int {
    // SAFETY: see the function's contract; `reserve` never raises.
    if unsafe { reserve(l, SOURCE_SLOTS) }.is_ok() {
        return ffi::LUA_OK;
    }
    // Out of memory, most likely with the finished chunk's garbage still around
    // (5.1 has no emergency collection): collect it and try once more, so that a
    // child which filled its memory limit still hands its results over.
    let mut collect = |l: RawState| -> c_int {
        // SAFETY: protected on `l`; a finalizer's error stops at that call.
        unsafe { ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0) };
        0
    };
    // SAFETY: (1) `protected` pushes two values, which fit in the slots Lua keeps past
    // every stack's end even when `reserve` could not grow it; (2) the body owns
    // nothing and does not panic; (3) `reserve` never raises.
    let message = match unsafe {
        protected(l, 0, 0, &mut collect);
        reserve(l, SOURCE_SLOTS)
    } {
        Ok(()) => return ffi::LUA_OK,
        Err(why) => why.message(c"stack overflow (no room for results)"),
    };
    let mut body = |l: RawState| -> c_int {
        // SAFETY: protected on `l`; the message is static.
        unsafe { ffi::lua_pushstring(l, message.as_ptr()) };
        1
    };
    // SAFETY: dropping the results leaves the base level's free slots (Lua never
    // lowers a level's room); the body owns nothing and does not panic. Either way
    // one value, the message or the error raised making it, ends up pushed.
    unsafe {
        ffi::lua_settop(l, Frame::HANDLER);
        protected(l, 0, 1, &mut body);
    }
    ffi::LUA_ERRRUN
}

/// Passes `"Error from thread: " .. msg` (`"Error from thread 'name': "` for a named
/// thread) to the state's logger, or writes it to stderr when there is none. An error
/// raised by the logger is swallowed.
///
/// # Safety
/// `l` is used by this thread only, with the error object on top and two free slots.
unsafe fn report_error(l: RawState, name: Option<&ThreadName>) {
    let prefix = error_prefix(b"Error from thread", name);
    let prefix = prefix.as_bytes();
    let mut logger_failed = false;
    let mut body = |l: RawState| -> c_int {
        // SAFETY: runs protected on `l` (see `protected`); the error object is arg 1.
        unsafe {
            push_bytes(l, prefix);
            match ffi::lua_type(l, 1) {
                ffi::LUA_TSTRING | ffi::LUA_TNUMBER => ffi::lua_pushvalue(l, 1),
                _ => {
                    ffi::lua_pushstring(l, NO_MESSAGE.as_ptr());
                }
            }
            ffi::lua_concat(l, 2);
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
