//! The Lua-facing side of channels: `llthreads.channel`, the channel methods,
//! `llthreads.select` and `llthreads.sleep`.
//!
//! As in `api.rs`, every entry point is a plain C function without upvalues that
//! checks its arguments (raising) before it owns anything, does its work in a helper
//! that owns what it needs and returns what to push or raise, and raises only once
//! that helper has returned and dropped everything.

use std::ffi::{c_int, CStr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::ffi;

use crate::api::{self, fail, guarded, raise, set_function, Raise};
use crate::api_pool;
use crate::channel::{Channel, Failed, Wait};
use crate::copy::{c_function_names, deliver, encode, prepare_source, CopyError, Rules};
use crate::handle;
use crate::interrupt;
use crate::names::Module;
use crate::raw::{arg_error, protected, raise_top, string_at, RawState};
use crate::select::{self, Fired, Source};
use crate::thread::Thread;
use crate::wait;

/// The largest capacity a channel may be given.
const MAX_CAPACITY: usize = i32::MAX as usize;

/// The channel methods and metamethods (see `handle::Methods`).
static METHODS: handle::Methods = &[
    (c"send", l_send),
    (c"receive", l_receive),
    (c"close", l_close),
    (c"len", l_len),
    (c"capacity", l_capacity),
    (c"closed", l_closed),
    (c"__len", l_len),
];

/// Opens the module (see `api::open`) and adds the channel functions to its table.
///
/// # Safety
/// Called from a `luaopen_*` function (raising allowed, nothing owned).
pub unsafe fn open(l: RawState, module: Module) -> c_int {
    handle::set_methods(METHODS);
    // SAFETY: see the function's contract; the module table is left on top.
    unsafe {
        let n = crate::api_pool::open(l, module);
        set_function(l, c"channel", l_channel);
        set_function(l, c"select", l_select);
        set_function(l, c"sleep", l_sleep);
        n
    }
}

// ---------------------------------------------------------------------------------
// Arguments

/// Raises `bad argument #idx to '<f>' (<what> expected, got <type>)`.
///
/// # Safety
/// As for `arg_error`.
unsafe fn type_error(l: RawState, idx: c_int, what: &CStr) -> ! {
    // SAFETY: see the function's contract; `luaL_typename` gives a static string.
    unsafe {
        let msg = ffi::lua_pushfstring(
            l,
            c"%s expected, got %s".as_ptr(),
            what.as_ptr(),
            ffi::luaL_typename(l, idx),
        );
        ffi::luaL_argerror(l, idx, msg);
    }
    std::process::abort()
}

/// The channel at `idx`, or an argument error.
///
/// # Safety
/// Called from a C function Lua called, in a frame owning nothing with `Drop`; two
/// free slots. The pointer is valid until Lua code runs again (see
/// `handle::channel_at`).
unsafe fn check_channel(l: RawState, idx: c_int) -> *const Channel {
    // SAFETY: see the function's contract.
    unsafe {
        let channel = handle::channel_at(l, idx);
        if channel.is_null() {
            type_error(l, idx, c"llthreads.channel");
        }
        channel
    }
}

/// The timeout argument at `idx`, in milliseconds: absent or nil waits as long as it
/// takes, 0 does not wait; negative or NaN is an argument error.
///
/// # Safety
/// As for [`check_channel`].
unsafe fn check_wait(l: RawState, idx: c_int) -> Wait {
    // SAFETY: see the function's contract.
    unsafe {
        if ffi::lua_isnoneornil(l, idx) != 0 {
            return Wait::Until(None);
        }
        let ms = ffi::luaL_checknumber(l, idx);
        if ms.is_nan() || ms < 0.0 {
            arg_error(
                l,
                idx,
                c"timeout must be a non-negative number of milliseconds",
            );
        }
        if ms == 0.0 {
            return Wait::Now;
        }
        Wait::Until(deadline_in_ms(ms))
    }
}

/// The deadline `ms` milliseconds from now (`None`: too far to tell from never).
fn deadline_in_ms(ms: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .ok()
        .and_then(wait::deadline_after)
}

/// The question a wait asks: has this thread been told to stop? Remembers the
/// module whose error to raise.
fn interrupt_check(module: &mut Option<Module>) -> impl FnMut() -> bool + '_ {
    move || {
        *module = interrupt::claim_here();
        module.is_some()
    }
}

fn interrupted(module: Option<Module>) -> Raise {
    Raise::Static(module.unwrap_or_default().interrupted_error())
}

// ---------------------------------------------------------------------------------
// llthreads.channel

/// A capacity as given: a non-negative integer no larger than [`MAX_CAPACITY`].
///
/// # Safety
/// As for [`check_channel`]; `idx` holds the value, `arg` is the argument to blame.
unsafe fn check_capacity(l: RawState, idx: c_int, arg: c_int) -> usize {
    // SAFETY: see the function's contract.
    unsafe {
        if ffi::lua_type(l, idx) == ffi::LUA_TNUMBER {
            let n = ffi::lua_tonumber(l, idx);
            if n >= 0.0 && n.fract() == 0.0 && n <= MAX_CAPACITY as f64 {
                return n as usize;
            }
        }
        arg_error(l, arg, c"capacity must be an integer from 0 to 2147483647")
    }
}

/// `llthreads.channel([capacity])` or `llthreads.channel{ capacity = n, name = s }`.
unsafe extern "C-unwind" fn l_channel(l: RawState) -> c_int {
    // SAFETY: called by Lua; arguments are read (raising) before anything is owned,
    // and the name stays on the stack (argument 1's field, pushed at 2) while used.
    unsafe {
        let mut capacity = None;
        let mut name: Option<&[u8]> = None;
        ffi::luaL_checkstack(l, 8, c"no room for a channel".as_ptr());
        match ffi::lua_type(l, 1) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => {}
            ffi::LUA_TNUMBER => capacity = Some(check_capacity(l, 1, 1)),
            ffi::LUA_TTABLE => {
                ffi::lua_settop(l, 1);
                ffi::lua_pushnil(l);
                while ffi::lua_next(l, 1) != 0 {
                    // [options, key, value]
                    match string_at(l, -2) {
                        Some(b"capacity") => capacity = Some(check_capacity(l, -1, 1)),
                        Some(b"name") => {
                            if ffi::lua_type(l, -1) != ffi::LUA_TSTRING {
                                arg_error(l, 1, c"name must be a string");
                            }
                        }
                        Some(_) => {
                            let msg = ffi::lua_pushfstring(
                                l,
                                c"unknown option '%s' (expected capacity, name)".as_ptr(),
                                ffi::lua_tolstring(l, -2, std::ptr::null_mut()),
                            );
                            ffi::luaL_argerror(l, 1, msg);
                        }
                        None => {
                            let msg = ffi::lua_pushfstring(
                                l,
                                c"unknown option of type %s (expected capacity, name)".as_ptr(),
                                ffi::luaL_typename(l, -2),
                            );
                            ffi::luaL_argerror(l, 1, msg);
                        }
                    }
                    ffi::lua_settop(l, -2);
                }
                ffi::lua_pushstring(l, c"name".as_ptr());
                ffi::lua_rawget(l, 1);
                name = string_at(l, 2);
            }
            _ => type_error(l, 1, c"capacity or options table"),
        }
        match guarded(l, || make_channel(l, capacity, name)) {
            Ok(()) => 1,
            Err(Some(existing)) => {
                // The name is a Lua string on the stack (NUL-terminated).
                ffi::lua_pushfstring(
                    l,
                    c"named channel '%s' exists with ".as_ptr(),
                    ffi::lua_tolstring(l, 2, std::ptr::null_mut()),
                );
                push_capacity(l, existing);
                ffi::lua_pushstring(l, c", asked for ".as_ptr());
                push_capacity(l, capacity);
                ffi::lua_concat(l, 4);
                ffi::luaL_argerror(l, 1, ffi::lua_tolstring(l, -1, std::ptr::null_mut()));
                0
            }
            Err(None) => raise_top(l),
        }
    }
}

/// Pushes `capacity N` or `unbounded`.
///
/// # Safety
/// Raising allowed, a free slot.
unsafe fn push_capacity(l: RawState, capacity: Option<usize>) {
    // SAFETY: see the function's contract; capacities fit a C int (MAX_CAPACITY).
    unsafe {
        match capacity {
            None => ffi::lua_pushstring(l, c"unbounded".as_ptr()),
            Some(n) => ffi::lua_pushfstring(l, c"capacity %d".as_ptr(), n as c_int),
        };
    }
}

/// Makes (or finds, by name) the channel and pushes it. `Err(Some(c))`: the named
/// channel exists with capacity `c`; `Err(None)`: pushing raised, the error object is
/// on top.
///
/// # Safety
/// `l` is the calling state with free slots; the frame owns nothing.
unsafe fn make_channel(
    l: RawState,
    capacity: Option<usize>,
    name: Option<&[u8]>,
) -> Result<(), Option<Option<usize>>> {
    let channel = match name {
        None => Channel::new(capacity),
        Some(name) => Channel::named(name, capacity).map_err(Some)?,
    };
    let raw = Arc::as_ptr(&channel);
    let mut body = |l: RawState| -> c_int {
        // SAFETY: protected on `l`; `channel` (this frame's) keeps `raw` alive.
        unsafe { handle::push(l, raw) };
        1
    };
    // SAFETY: `l` has free slots; the body owns nothing and does not panic.
    let status = unsafe { protected(l, 0, 1, &mut body) };
    drop(channel);
    if status == ffi::LUA_OK {
        Ok(())
    } else {
        Err(None)
    }
}

// ---------------------------------------------------------------------------------
// Methods

/// What a send or receive leaves to push.
enum Outcome {
    /// This many values are already pushed.
    Pushed(c_int),
    /// `nil, msg`.
    Fail(&'static str),
    /// `item, nil, "closed"` for item `i` (from 1) of `select`'s list.
    Closed(usize),
    /// Boxed: a [`Raise`] holds its message text inline, and an `Outcome` that large
    /// was copied several times on every send and receive.
    Raise(Box<Raise>),
    /// `send` met a C function to send by name: look the names up, then send again.
    NeedNames,
}

fn failure(failed: Failed, module: Option<Module>) -> Outcome {
    match failed {
        Failed::Timeout => Outcome::Fail("timeout"),
        Failed::Closed => Outcome::Fail("closed"),
        Failed::Interrupted => Outcome::Raise(Box::new(interrupted(module))),
    }
}

/// # Safety
/// Called by the entry points, which own nothing; two free slots.
unsafe fn finish(l: RawState, outcome: Outcome) -> c_int {
    // SAFETY: see the function's contract.
    unsafe {
        match outcome {
            Outcome::Pushed(n) => n,
            Outcome::Fail(msg) => fail(l, msg),
            Outcome::Closed(i) => {
                ffi::lua_rawgeti(l, 1, i as ffi::lua_Integer);
                fail(l, "closed") + 1
            }
            Outcome::Raise(what) => {
                // Out of its box, and the box freed, first: the frame that raises
                // owns nothing.
                let what = api::unbox(what);
                raise(l, what)
            }
            Outcome::NeedNames => raise(l, CopyError::NeedNames.into()),
        }
    }
}

/// `ch:send(value [, timeout_ms])`.
unsafe extern "C-unwind" fn l_send(l: RawState) -> c_int {
    // SAFETY: called by Lua; checks first, then the helper owns the message, then
    // the outcome is pushed or raised once it has returned.
    unsafe {
        let mut names_fresh = false;
        loop {
            // First: on 5.1 and LuaJIT it may run finalizers, whose Lua code can
            // replace this frame's values (`debug.setlocal`) and have the channel
            // collected; nothing read before it could be trusted after it.
            let levels = prepare_source(l, 2, 2);
            let channel = check_channel(l, 1);
            if ffi::lua_isnoneornil(l, 2) != 0 {
                arg_error(l, 2, c"nil cannot be sent");
            }
            let wait = check_wait(l, 3);
            let outcome = guarded(l, || send(l, &*channel, wait, levels, names_fresh));
            if matches!(outcome, Outcome::NeedNames) && !names_fresh {
                // Lua code may run here (finalizers), so everything is checked again.
                c_function_names(l);
                names_fresh = true;
                continue;
            }
            return finish(l, outcome);
        }
    }
}

/// # Safety
/// `l` has the value at 2 and the room `prepare_source` made (`levels` table levels);
/// `channel` stays valid
/// (no Lua code runs here).
unsafe fn send(
    l: RawState,
    channel: &Channel,
    wait: Wait,
    levels: c_int,
    names_fresh: bool,
) -> Outcome {
    // SAFETY: see the function's contract; encoding only reads `l`.
    let msg = match unsafe {
        encode(
            l,
            2,
            &mut |len| channel.spare(len),
            levels,
            names_fresh,
            Rules::VALUES,
        )
    } {
        Ok(msg) => msg,
        Err(CopyError::NeedNames) => return Outcome::NeedNames,
        Err(e) => return Outcome::Raise(Box::new(e.into())),
    };
    let mut module = None;
    let sent = channel.send(msg, wait, &mut interrupt_check(&mut module));
    match sent {
        Ok(()) => {
            // SAFETY: a boolean push needs a free slot, which `l_send` reserved.
            unsafe { ffi::lua_pushboolean(l, 1) };
            Outcome::Pushed(1)
        }
        Err(failed) => failure(failed, module),
    }
}

/// `ch:receive([timeout_ms])`.
unsafe extern "C-unwind" fn l_receive(l: RawState) -> c_int {
    // SAFETY: as for `l_send`.
    unsafe {
        let channel = check_channel(l, 1);
        let wait = check_wait(l, 2);
        ffi::luaL_checkstack(l, 8, c"no room to receive".as_ptr());
        let outcome = guarded(l, || receive(l, channel, wait));
        finish(l, outcome)
    }
}

/// # Safety
/// `l` is the calling state with free slots; `channel` is valid now (no Lua code ran
/// since it was checked).
unsafe fn receive(l: RawState, channel: *const Channel, wait: Wait) -> Outcome {
    // SAFETY: see the function's contract. Writing the message may run Lua code
    // (a collection step with finalizers), which could release the userdata's
    // reference by calling `__gc` by hand: a reference of our own is taken first.
    unsafe {
        let mut module = None;
        let received = (*channel).receive(wait, &mut interrupt_check(&mut module));
        match received {
            Ok(msg) => {
                Arc::increment_strong_count(channel);
                let channel = Arc::from_raw(channel);
                match deliver(&msg, l) {
                    Ok(()) => {
                        channel.recycle(msg);
                        Outcome::Pushed(1)
                    }
                    Err(()) => {
                        channel.requeue(msg);
                        Outcome::Raise(Box::new(Raise::Top))
                    }
                }
            }
            Err(failed) => failure(failed, module),
        }
    }
}

/// `ch:close()`: true; idempotent.
unsafe extern "C-unwind" fn l_close(l: RawState) -> c_int {
    // SAFETY: called by Lua; closing runs no Lua code.
    unsafe {
        let channel = check_channel(l, 1);
        guarded(l, || (*channel).close());
        ffi::lua_pushboolean(l, 1);
    }
    1
}

/// `ch:len()` and `#ch`: messages queued.
unsafe extern "C-unwind" fn l_len(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned.
    unsafe {
        let channel = check_channel(l, 1);
        let len = guarded(l, || (*channel).len());
        ffi::lua_pushinteger(l, len as ffi::lua_Integer);
    }
    1
}

/// `ch:capacity()`: the capacity, nil when unbounded.
unsafe extern "C-unwind" fn l_capacity(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned.
    unsafe {
        let channel = check_channel(l, 1);
        match guarded(l, || (*channel).capacity()) {
            Some(n) => ffi::lua_pushinteger(l, n as ffi::lua_Integer),
            None => ffi::lua_pushnil(l),
        }
    }
    1
}

/// `ch:closed()`.
unsafe extern "C-unwind" fn l_closed(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned.
    unsafe {
        let channel = check_channel(l, 1);
        let closed = guarded(l, || (*channel).is_closed());
        ffi::lua_pushboolean(l, closed as c_int);
    }
    1
}

// ---------------------------------------------------------------------------------
// select

/// What an item of the list is.
enum Kind {
    Channel(*const Channel),
    Thread(*mut Thread),
    /// A pool task (`pool:submit`).
    Task(*const crate::taskpool::Task),
}

/// The item on top of the stack (item `i` of argument 1), or an argument error.
///
/// # Safety
/// As for [`check_channel`].
unsafe fn check_item(l: RawState, i: usize) -> Kind {
    // SAFETY: see the function's contract.
    unsafe {
        let channel = handle::channel_at(l, -1);
        if !channel.is_null() {
            return Kind::Channel(channel);
        }
        if let Some(task) = api_pool::task_object_at(l, -1) {
            // Refused as a thread is: a joined task would be ready for ever.
            let refusal = if task.is_null() {
                c"item %d: task object already collected"
            } else if (*task).joined() {
                c"item %d: Can't join a task that has already been joined."
            } else {
                return Kind::Task(task);
            };
            let msg = ffi::lua_pushfstring(l, refusal.as_ptr(), i as c_int);
            ffi::luaL_argerror(l, 1, msg);
        }
        let slot = api::thread_slot(l, -1);
        if !slot.is_null() {
            let thread = *slot;
            if thread.is_null() {
                let msg = ffi::lua_pushfstring(
                    l,
                    c"item %d: thread object already collected".as_ptr(),
                    i as c_int,
                );
                ffi::luaL_argerror(l, 1, msg);
            }
            if let Err(refusal) = (*thread).end_source() {
                ffi::lua_pushfstring(l, c"item %d: ".as_ptr(), i as c_int);
                crate::raw::push_bytes(l, refusal.message().as_bytes());
                ffi::lua_concat(l, 2);
                ffi::luaL_argerror(l, 1, ffi::lua_tolstring(l, -1, std::ptr::null_mut()));
            }
            return Kind::Thread(thread);
        }
        let msg = ffi::lua_pushfstring(
            l,
            c"item %d: llthreads.channel, thread or task expected, got %s".as_ptr(),
            i as c_int,
            ffi::luaL_typename(l, -1),
        );
        ffi::luaL_argerror(l, 1, msg);
        std::process::abort()
    }
}

/// `llthreads.select(list [, timeout_ms])`.
unsafe extern "C-unwind" fn l_select(l: RawState) -> c_int {
    // SAFETY: called by Lua; every item is checked (raising) before anything is owned.
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            type_error(l, 1, c"table");
        }
        let wait = check_wait(l, 2);
        ffi::lua_settop(l, 2);
        ffi::luaL_checkstack(l, 8, c"no room to select".as_ptr());
        let n = ffi::lua_rawlen(l, 1);
        if n == 0 {
            arg_error(l, 1, c"empty list: nothing to wait for");
        }
        for i in 1..=n {
            ffi::lua_rawgeti(l, 1, i as ffi::lua_Integer);
            check_item(l, i);
            ffi::lua_settop(l, 2);
        }
        let outcome = guarded(l, || select(l, n, wait));
        finish(l, outcome)
    }
}

/// # Safety
/// `l` has the checked list at 1 (`n` items) and its top at 2, with free slots.
unsafe fn select(l: RawState, n: usize, wait: Wait) -> Outcome {
    let mut sources = Vec::with_capacity(n);
    // SAFETY: see the function's contract. The items were checked just before and no
    // Lua code ran since; each source holds its own reference.
    unsafe {
        for i in 1..=n {
            ffi::lua_rawgeti(l, 1, i as ffi::lua_Integer);
            let kind = if !handle::channel_at(l, -1).is_null() {
                Kind::Channel(handle::channel_at(l, -1))
            } else if !api_pool::task_at(l, -1).is_null() {
                Kind::Task(api_pool::task_at(l, -1))
            } else {
                Kind::Thread(*api::thread_slot(l, -1))
            };
            ffi::lua_settop(l, 2);
            match kind {
                Kind::Channel(c) => {
                    Arc::increment_strong_count(c);
                    sources.push(Source::Channel(Arc::from_raw(c)));
                }
                Kind::Task(t) => sources.push(Source::Thread(api_pool::task_record(t))),
                Kind::Thread(t) => match (*t).end_source() {
                    Ok(record) => sources.push(Source::Thread(record)),
                    // Checked by `l_select` just before, with no Lua code run since.
                    Err(refusal) => return Outcome::Fail(refusal.message()),
                },
            }
        }
    }
    let mut module = None;
    let fired = select::select(&sources, wait, &mut interrupt_check(&mut module));
    // SAFETY: pushes of list items (raw gets, no allocation) and of booleans use the
    // reserved slots; `deliver` raises nothing.
    unsafe {
        match fired {
            Fired::Message(i, msg) => {
                ffi::lua_rawgeti(l, 1, (i + 1) as ffi::lua_Integer);
                match deliver(&msg, l) {
                    Ok(()) => {
                        if let Source::Channel(channel) = &sources[i] {
                            channel.recycle(msg);
                        }
                        Outcome::Pushed(2)
                    }
                    Err(()) => {
                        if let Source::Channel(channel) = &sources[i] {
                            channel.requeue(msg);
                        }
                        Outcome::Raise(Box::new(Raise::Top))
                    }
                }
            }
            Fired::Closed(i) => Outcome::Closed(i + 1),
            Fired::Ended(i) => {
                ffi::lua_rawgeti(l, 1, (i + 1) as ffi::lua_Integer);
                ffi::lua_pushboolean(l, 1);
                Outcome::Pushed(2)
            }
            Fired::Timeout => Outcome::Fail("timeout"),
            Fired::Interrupted => Outcome::Raise(Box::new(interrupted(module))),
        }
    }
}

// ---------------------------------------------------------------------------------
// sleep

/// `llthreads.sleep(ms)`.
unsafe extern "C-unwind" fn l_sleep(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned across the raise.
    unsafe {
        let ms = ffi::luaL_checknumber(l, 1);
        if ms.is_nan() || ms < 0.0 {
            arg_error(l, 1, c"non-negative number of milliseconds expected");
        }
        let deadline = if ms == 0.0 {
            Some(Instant::now())
        } else {
            deadline_in_ms(ms)
        };
        let mut module = None;
        if guarded(l, || {
            wait::sleep(deadline, &mut interrupt_check(&mut module))
        }) {
            raise(l, interrupted(module));
        }
    }
    0
}
