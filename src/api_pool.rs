//! The Lua-facing side of the task pool (`taskpool.rs`): `llthreads.pool{...}`, the
//! pool's methods (`submit`, `close`, `size`) and the task's (`join`, `alive`,
//! `interrupt`).
//!
//! As elsewhere, every entry point checks its arguments (raising) before it owns
//! anything, does its work in a closure under `guarded` that returns plain data, and
//! raises only once that closure has returned and dropped what it owned.

use std::ffi::{c_int, c_void, CStr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::ffi;

use crate::api::{self, fail, guarded, raise, set_function, Raise};
use crate::api_spawn::{
    check_boolean, check_bytes, option_error, option_name, push_paths, type_error, unknown_option,
};
use crate::channel::{Msg, Wait};
use crate::copy::{
    c_function_names, deliver, encode, prepare_source, remember_function, reserve, CopyError, Rules,
};
use crate::names::Module;
use crate::object::{self, Object};
use crate::raw::{
    arg_error, protected, push_bytes, raise_top, registry_get, registry_set, string_at, RawState,
};
use crate::taskpool::{Closed, Config, Failed, Handle, Joined, OwnWorker, Paths, Refused, Task};

/// Registry keys of the two metatables (one per copy of this library).
static POOL_KEY: u8 = 0;
static TASK_KEY: u8 = 0;

/// The most workers a pool may have.
const MAX_SIZE: usize = 1024;

/// The block of a pool userdata; the tag tells ours from any other userdata.
#[repr(C)]
struct PoolSlot {
    tag: *const u8,
    /// From `Box::into_raw`; null once collected.
    pool: *mut Handle,
}

/// The block of a task userdata.
#[repr(C)]
struct TaskSlot {
    tag: *const u8,
    /// From `Arc::into_raw`; null once collected.
    task: *const Task,
}

/// Opens the module (see `api_spawn::open`) and adds `llthreads.pool`.
///
/// # Safety
/// Called from a `luaopen_*` function (raising allowed, nothing owned).
pub unsafe fn open(l: RawState, module: Module) -> c_int {
    let pool: ffi::lua_CFunction = match module {
        Module::Llthreads => l_pool_llthreads,
        Module::Llthreads2 => l_pool_llthreads2,
    };
    object::set_finder(pool_object_at);
    // SAFETY: see the function's contract; the module table is left on top.
    unsafe {
        let n = crate::api_spawn::open(l, module);
        set_function(l, c"pool", pool);
        n
    }
}

/// The handle of the live pool object at `idx`, if it is one. Valid while the value
/// is reachable and no Lua code ran since.
///
/// # Safety
/// Valid state; never raises.
unsafe fn handle_at(l: RawState, idx: c_int) -> Option<*const Handle> {
    // SAFETY: a non-null block with this tag is a `PoolSlot`, whose pointer is a live
    // handle until `__gc` empties it.
    unsafe {
        let slot = block_at(l, idx, &POOL_KEY) as *mut PoolSlot;
        (!slot.is_null() && !(*slot).pool.is_null()).then(|| (*slot).pool.cast_const())
    }
}

/// The pool behind the value at `idx`, for the copier (see `object.rs`).
///
/// # Safety
/// As for [`handle_at`].
unsafe fn pool_object_at(l: RawState, idx: c_int) -> Option<*const dyn Object> {
    // SAFETY: the same contract.
    unsafe { handle_at(l, idx) }.map(|h| h as *const dyn Object)
}

/// A pool copied into another state is a new handle of the same pool there.
impl Object for Handle {
    fn carry(&self) -> Box<dyn Object> {
        Box::new(self.for_message())
    }

    unsafe fn push(&self, l: RawState) {
        // SAFETY: see the trait's contract. The check raises nothing; the object is
        // made (which may raise) before the new handle exists, so a raise leaves an
        // empty object for the collector and nothing owned.
        unsafe {
            let in_worker = self.is_worker_state(l);
            let block = push_object(l, &POOL_KEY) as *mut PoolSlot;
            (*block).pool = Box::into_raw(Box::new(self.copy_for(in_worker)));
        }
    }
}

unsafe extern "C-unwind" fn l_pool_llthreads(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { new_pool(l, Module::Llthreads) }
}

unsafe extern "C-unwind" fn l_pool_llthreads2(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { new_pool(l, Module::Llthreads2) }
}

// ---------------------------------------------------------------------------------
// Objects

/// The block at `idx` when it is our userdata of the kind `key` tags, else null.
///
/// # Safety
/// Valid state; never raises.
unsafe fn block_at(l: RawState, idx: c_int, key: &'static u8) -> *mut c_void {
    // SAFETY: see the function's contract. The size check comes before the tag is
    // read, so the read stays inside the block whatever made it (both kinds of block
    // have the same size and layout: a tag, then a pointer).
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA
            || ffi::lua_rawlen(l, idx) as usize != std::mem::size_of::<PoolSlot>()
        {
            return std::ptr::null_mut();
        }
        let block = ffi::lua_touserdata(l, idx);
        if std::ptr::eq(*(block as *const *const u8), key) {
            block
        } else {
            std::ptr::null_mut()
        }
    }
}

/// The task at `idx`, or null when the value is not a live task of ours (for
/// `select`). Valid while the value is reachable and no Lua code ran since.
///
/// # Safety
/// Valid state; never raises.
pub unsafe fn task_at(l: RawState, idx: c_int) -> *const Task {
    // SAFETY: a non-null block with this tag is a `TaskSlot`.
    unsafe {
        let slot = block_at(l, idx, &TASK_KEY) as *mut TaskSlot;
        if slot.is_null() {
            std::ptr::null()
        } else {
            (*slot).task
        }
    }
}

/// The value at `idx` when it is a task object of ours: `Some` of its task, null once
/// the object was collected (`__gc` called by hand); `None` for any other value.
///
/// # Safety
/// Valid state; never raises.
pub unsafe fn task_object_at(l: RawState, idx: c_int) -> Option<*const Task> {
    // SAFETY: a non-null block with this tag is a `TaskSlot`.
    unsafe {
        let slot = block_at(l, idx, &TASK_KEY) as *mut TaskSlot;
        (!slot.is_null()).then(|| (*slot).task)
    }
}

/// The record to wait on for the end of the task at `idx` (for `select`).
///
/// # Safety
/// As for [`task_at`]; the task is live.
pub unsafe fn task_record(task: *const Task) -> Arc<crate::record::Record> {
    // SAFETY: see the function's contract.
    unsafe { Arc::clone((*task).record()) }
}

/// The pool at `idx` (argument `idx` of a method), or an argument error.
///
/// # Safety
/// Called from a C function Lua called, owning nothing.
unsafe fn check_pool(l: RawState, idx: c_int) -> *mut Handle {
    // SAFETY: see the function's contract.
    unsafe {
        let slot = block_at(l, idx, &POOL_KEY) as *mut PoolSlot;
        if slot.is_null() {
            type_expected(l, idx, c"llthreads.pool");
        }
        if (*slot).pool.is_null() {
            arg_error(l, idx, c"pool already collected");
        }
        (*slot).pool
    }
}

/// The task at `idx`, or an argument error.
///
/// # Safety
/// As for [`check_pool`].
unsafe fn check_task(l: RawState, idx: c_int) -> *const Task {
    // SAFETY: see the function's contract.
    unsafe {
        let slot = block_at(l, idx, &TASK_KEY) as *mut TaskSlot;
        if slot.is_null() {
            type_expected(l, idx, c"llthreads.task");
        }
        if (*slot).task.is_null() {
            arg_error(l, idx, c"task already collected");
        }
        (*slot).task
    }
}

/// Raises `bad argument #idx to 'f' (<what> expected, got <type>)`.
///
/// # Safety
/// As for `arg_error`.
unsafe fn type_expected(l: RawState, idx: c_int, what: &CStr) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        let msg = ffi::lua_pushfstring(
            l,
            c"%s expected, got %s".as_ptr(),
            what.as_ptr(),
            ffi::luaL_typename(l, idx),
        );
        arg_error(l, idx, CStr::from_ptr(msg))
    }
}

/// Pushes a new userdata block (a tag and a null pointer) with the metatable of
/// `key`, and returns it; the caller stores the pointer.
///
/// # Safety
/// Raising allowed, nothing owned.
unsafe fn push_object(l: RawState, key: &'static u8) -> *mut TaskSlot {
    // SAFETY: see the function's contract. The block is complete (null pointer)
    // before anything can run `__gc` on it. Making the metatable allocates, and a
    // finalizer run by that can replace the block's stack slot (`debug.setlocal`) and
    // let it be collected: the slot is checked again before each use of the block.
    unsafe {
        ffi::luaL_checkstack(l, 8, c"no room for an object".as_ptr());
        let block = ffi::lua_newuserdata(l, std::mem::size_of::<TaskSlot>()) as *mut TaskSlot;
        let at = ffi::lua_gettop(l);
        block.write(TaskSlot {
            tag: key,
            task: std::ptr::null(),
        });
        ensure_metatable(l, key);
        if !still_block(l, at, block.cast()) {
            tampered(l);
        }
        ffi::lua_setmetatable(l, at);
        if !still_block(l, at, block.cast()) {
            tampered(l);
        }
        block
    }
}

/// Whether the value at `idx` is still the userdata whose block is `block`.
///
/// # Safety
/// `l` is valid; never raises.
unsafe fn still_block(l: RawState, idx: c_int, block: *mut c_void) -> bool {
    // SAFETY: type and address reads only.
    unsafe { ffi::lua_type(l, idx) == ffi::LUA_TUSERDATA && ffi::lua_touserdata(l, idx) == block }
}

/// Raises the error for an object of ours that Lua code changed while it was made.
///
/// # Safety
/// Raising allowed (inside a protected call, nothing owned).
unsafe fn tampered(l: RawState) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::lua_pushstring(
            l,
            c"llthreads: an object being made was changed by Lua code".as_ptr(),
        );
        raise_top(l)
    }
}

/// Pushes the metatable of `key`, made in this state's registry on first use.
///
/// # Safety
/// Raising allowed, nothing owned; four free slots.
unsafe fn ensure_metatable(l: RawState, key: &'static u8) {
    type Functions = &'static [(&'static CStr, ffi::lua_CFunction)];
    let (methods, gc, name): (Functions, ffi::lua_CFunction, &CStr) =
        if std::ptr::eq(key, &POOL_KEY) {
            (
                &[
                    (c"submit", l_submit),
                    (c"close", l_close),
                    (c"size", l_size),
                ],
                l_pool_gc,
                c"llthreads.pool",
            )
        } else {
            (
                &[
                    (c"join", l_join),
                    (c"alive", l_alive),
                    (c"interrupt", l_interrupt),
                ],
                l_task_gc,
                c"llthreads.task",
            )
        };
    // SAFETY: see the function's contract.
    unsafe {
        if registry_get(l, key) == ffi::LUA_TTABLE {
            return;
        }
        ffi::lua_settop(l, -2);
        ffi::lua_createtable(l, 0, 4);
        ffi::lua_createtable(l, 0, methods.len() as c_int);
        for (method, f) in methods {
            ffi::lua_pushcfunction(l, *f);
            ffi::lua_setfield(l, -2, method.as_ptr());
        }
        ffi::lua_setfield(l, -2, c"__index".as_ptr());
        ffi::lua_pushcfunction(l, gc);
        ffi::lua_setfield(l, -2, c"__gc".as_ptr());
        ffi::lua_pushcfunction(l, l_tostring);
        ffi::lua_setfield(l, -2, c"__tostring".as_ptr());
        if std::ptr::eq(key, &POOL_KEY) {
            ffi::lua_pushcfunction(l, l_pool_eq);
            ffi::lua_setfield(l, -2, c"__eq".as_ptr());
        }
        ffi::lua_pushstring(l, name.as_ptr());
        ffi::lua_setfield(l, -2, c"__name".as_ptr());
        ffi::lua_pushvalue(l, -1);
        registry_set(l, key);
    }
}

/// Pushes `text` (owned here), drops it, and raises it.
///
/// # Safety
/// Called from a C function Lua called, owning nothing else.
unsafe fn raise_text(l: RawState, text: Vec<u8>) -> ! {
    let mut body = |l: RawState| -> c_int {
        // SAFETY: protected on `l`.
        unsafe { push_bytes(l, &text) };
        1
    };
    // SAFETY: the push runs protected (its failure leaves the error object); `text`
    // is dropped before the raise.
    unsafe {
        protected(l, 0, 1, &mut body);
        drop(text);
        raise_top(l)
    }
}

// ---------------------------------------------------------------------------------
// llthreads.pool{...}

/// `llthreads.pool([options])`.
///
/// # Safety
/// Called from a C function Lua called.
unsafe fn new_pool(l: RawState, module: Module) -> c_int {
    // SAFETY: options are checked (raising) before anything is owned; `init` and the
    // paths become owned data in a guarded closure, and what it returns is raised or
    // stored only after it returned.
    unsafe {
        ffi::luaL_checkstack(l, 12, c"no room for pool".as_ptr());
        let opts = match ffi::lua_type(l, 1) {
            ffi::LUA_TNONE | ffi::LUA_TNIL => None,
            ffi::LUA_TTABLE => Some(1),
            _ => type_expected(l, 1, c"table of options"),
        };
        ffi::lua_settop(l, 1);
        let mut size = std::thread::available_parallelism().map_or(1, |n| n.get());
        let (mut queue, mut max_tasks, mut max_memory, mut paths) = (None, None, None, true);
        // Stack: 1 options, 2 init (or nil).
        ffi::lua_pushnil(l);
        if let Some(idx) = opts {
            ffi::lua_pushnil(l);
            while ffi::lua_next(l, idx) != 0 {
                let key = ffi::lua_gettop(l) - 1;
                let value = key + 1;
                let name = option_name(l, idx, key);
                match name {
                    b"size" => {
                        let n = check_bytes(l, idx, c"size", value);
                        if !(1..=MAX_SIZE).contains(&n) {
                            option_error(l, idx, c"size must be between 1 and 1024 threads");
                        }
                        size = n;
                    }
                    b"queue" => {
                        let n = check_bytes(l, idx, c"queue", value);
                        if n == 0 {
                            option_error(l, idx, c"queue must hold at least 1 task");
                        }
                        queue = Some(n);
                    }
                    b"max_tasks" => {
                        let n = check_bytes(l, idx, c"max_tasks", value);
                        if n == 0 {
                            option_error(l, idx, c"max_tasks must be at least 1");
                        }
                        max_tasks = Some(n as u64);
                    }
                    b"max_memory" => {
                        let n = check_bytes(l, idx, c"max_memory", value);
                        if n == 0 {
                            option_error(l, idx, c"max_memory must be a positive number of bytes");
                        }
                        max_memory = Some(n);
                    }
                    b"paths" => paths = check_boolean(l, idx, c"paths", value),
                    b"init" => {
                        if !matches!(
                            ffi::lua_type(l, value),
                            ffi::LUA_TFUNCTION | ffi::LUA_TSTRING
                        ) {
                            type_error(l, idx, c"init", c"a function or source", value);
                        }
                        ffi::lua_pushvalue(l, value);
                        ffi::lua_replace(l, 2);
                    }
                    _ => unknown_option(l, idx, key),
                }
                ffi::lua_settop(l, key);
            }
        }
        // Stack: 1 options, 2 init, 3 path, 4 cpath.
        push_paths(l);
        let limit = api::memory_limit(l);
        let init = if ffi::lua_type(l, 2) == ffi::LUA_TNIL {
            None
        } else {
            match encode_values(l, 2, 2) {
                Ok(mut msgs) => msgs.pop(),
                Err(what) => raise(l, what),
            }
        };
        let built = guarded(l, || {
            let copy = |idx| string_at(l, idx).map(<[u8]>::to_vec);
            let config = Config {
                size,
                init,
                queue,
                max_tasks,
                max_memory,
                paths: paths.then(|| Paths {
                    path: copy(3),
                    cpath: copy(4),
                }),
                limit,
                module,
            };
            Handle::new_pool(config).map(|pool| Box::into_raw(Box::new(pool)))
        });
        match built {
            Ok(pool) => {
                // The userdata is made after the pool: if that allocation fails, the
                // pool is closed (dropped) before the error is raised.
                // Protected on `l`; the block was just written by `push_object`.
                let mut made = |l: RawState| -> c_int {
                    let block = push_object(l, &POOL_KEY) as *mut PoolSlot;
                    (*block).pool = pool;
                    1
                };
                if protected(l, 0, 1, &mut made) != ffi::LUA_OK {
                    guarded(l, || Box::from_raw(pool).close_now());
                    raise_top(l);
                }
                1
            }
            Err(Failed::Text(text)) => raise_text(l, text),
            Err(Failed::Interrupted(module)) => raise(l, Raise::Static(module.interrupted_error())),
        }
    }
}

/// Encodes `l[first..=last]` into messages by the rules of `spawn`'s values,
/// looking up C function names when one needs it.
///
/// # Safety
/// Called from a C function Lua called, owning nothing; the values are on the stack
/// with LUA_MINSTACK free slots above.
unsafe fn encode_values(l: RawState, first: c_int, last: c_int) -> Result<Vec<Msg>, Raise> {
    // SAFETY: see the function's contract: nothing is owned yet, and `l_submit`
    // checks its pool again once no Lua code can run any more.
    unsafe { remember_function(l, first) };
    let mut names_fresh = false;
    loop {
        // SAFETY: see the function's contract; the names are looked up (a protected
        // call that may run finalizers) outside the guarded work, and the room made
        // again after it.
        let levels = unsafe { prepare_source(l, first, last) };
        // SAFETY: as above; encoding only reads `l`.
        let encoded = unsafe {
            guarded(l, || {
                let mut msgs = Vec::with_capacity((last - first + 1).max(0) as usize);
                for idx in first..=last {
                    msgs.push(encode(
                        l,
                        idx,
                        &mut |_| Vec::new(),
                        levels,
                        names_fresh,
                        Rules::VALUES,
                    )?);
                }
                Ok::<_, CopyError>(msgs)
            })
        };
        match encoded {
            Ok(msgs) => return Ok(msgs),
            Err(CopyError::NeedNames) if !names_fresh => {
                // SAFETY: as above.
                unsafe { c_function_names(l) };
                names_fresh = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

// ---------------------------------------------------------------------------------
// Pool methods

/// `pool:submit([options,] fn, ...)`: `options.timeout` (milliseconds; 0: do not wait)
/// bounds the wait for room in a bounded queue.
unsafe extern "C-unwind" fn l_submit(l: RawState) -> c_int {
    // SAFETY: called by Lua; checks first, then the messages are owned by the guarded
    // closure that queues them, then the outcome is pushed or raised.
    unsafe {
        let pool = check_pool(l, 1);
        let (wait, first) = if ffi::lua_type(l, 2) == ffi::LUA_TTABLE {
            (check_submit_options(l, 2), 3)
        } else {
            (Wait::Until(None), 2)
        };
        let is_task = |l: RawState| {
            matches!(
                ffi::lua_type(l, first),
                ffi::LUA_TFUNCTION | ffi::LUA_TSTRING
            )
        };
        let not_task = |l: RawState| -> ! {
            let msg = ffi::lua_pushfstring(
                l,
                c"function or source expected, got %s".as_ptr(),
                ffi::luaL_typename(l, first),
            );
            arg_error(l, first, CStr::from_ptr(msg))
        };
        if !is_task(l) {
            not_task(l);
        }
        let last = ffi::lua_gettop(l);
        let msgs = match encode_values(l, first, last) {
            Ok(msgs) => msgs,
            Err(what) => raise(l, what),
        };
        enum Submitted {
            Task(*const Task),
            Fail(&'static str),
            Interrupted(Module),
            /// Lua code run while encoding (a finalizer) collected or replaced the pool.
            Changed,
            /// ... or replaced the function with a value that is neither a function
            /// nor source, after it was checked.
            NotTask,
        }
        // The messages move into the closure, so they are gone before anything is
        // raised below, whatever the outcome (a panic included).
        let submitted = guarded(l, move || {
            // Not `check_pool`: it raises, and the messages are owned here.
            let slot = block_at(l, 1, &POOL_KEY) as *mut PoolSlot;
            if slot.is_null() || (*slot).pool != pool {
                return Submitted::Changed;
            }
            // What was encoded is what is there now: no Lua code ran since the walk.
            if !is_task(l) {
                return Submitted::NotTask;
            }
            let mut msgs = msgs;
            let args = msgs.split_off(1);
            let Some(function) = msgs.pop() else {
                return Submitted::Changed;
            };
            match (*pool).submit(function, args, wait) {
                Ok(task) => Submitted::Task(Arc::into_raw(task)),
                Err(Refused::Full) => Submitted::Fail("full"),
                Err(Refused::Timeout) => Submitted::Fail("timeout"),
                Err(Refused::Closed) => Submitted::Fail("closed"),
                Err(Refused::Interrupted(module)) => Submitted::Interrupted(module),
            }
        });
        match submitted {
            Submitted::Task(task) => {
                // Protected on `l`; the block takes the reference.
                let mut made = |l: RawState| -> c_int {
                    (*push_object(l, &TASK_KEY)).task = task;
                    1
                };
                if protected(l, 0, 1, &mut made) != ffi::LUA_OK {
                    guarded(l, || drop(Arc::from_raw(task)));
                    raise_top(l);
                }
                1
            }
            Submitted::Fail(msg) => fail(l, msg),
            Submitted::Interrupted(module) => raise(l, Raise::Static(module.interrupted_error())),
            Submitted::Changed => raise(
                l,
                Raise::Static(c"llthreads: the pool was changed by Lua code"),
            ),
            Submitted::NotTask => not_task(l),
        }
    }
}

/// `{timeout = ms}` of `submit`.
///
/// # Safety
/// As for `check_options` of `api_spawn`.
unsafe fn check_submit_options(l: RawState, idx: c_int) -> Wait {
    let mut wait = Wait::Until(None);
    // SAFETY: raw iteration; raising allowed.
    unsafe {
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, idx) != 0 {
            let key = ffi::lua_gettop(l) - 1;
            match string_at(l, key) {
                Some(b"timeout") => {
                    if ffi::lua_type(l, key + 1) != ffi::LUA_TNUMBER {
                        type_error(l, idx, c"timeout", c"a number of milliseconds", key + 1);
                    }
                    let ms = ffi::lua_tonumber(l, key + 1);
                    if ms.is_nan() || ms < 0.0 {
                        option_error(
                            l,
                            idx,
                            c"timeout must be a non-negative number of milliseconds",
                        );
                    }
                    wait = if ms == 0.0 {
                        Wait::Now
                    } else {
                        Wait::Until(deadline_in(ms))
                    };
                }
                _ => option_error(l, idx, c"the only option of submit is timeout"),
            }
            ffi::lua_settop(l, key);
        }
    }
    wait
}

/// The deadline `ms` milliseconds from now (`None`: too far to tell from never).
fn deadline_in(ms: f64) -> Option<Instant> {
    Duration::try_from_secs_f64(ms / 1000.0)
        .ok()
        .and_then(|d| Instant::now().checked_add(d))
}

/// `pool:close([timeout [, cancel]])`.
unsafe extern "C-unwind" fn l_close(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned across the pushes.
    unsafe {
        let pool = check_pool(l, 1);
        let deadline = if ffi::lua_isnoneornil(l, 2) != 0 {
            None
        } else {
            let ms = ffi::luaL_checknumber(l, 2);
            if ms.is_nan() || ms < 0.0 {
                arg_error(
                    l,
                    2,
                    c"timeout must be a non-negative number of milliseconds",
                );
            }
            Some(deadline_in(ms).unwrap_or_else(|| Instant::now() + Duration::from_secs(1 << 30)))
        };
        let cancel = ffi::lua_toboolean(l, 3) != 0;
        match guarded(l, || (*pool).close(cancel, deadline)) {
            Ok(Closed::Done) => {
                ffi::lua_pushboolean(l, 1);
                1
            }
            Ok(Closed::Timeout) => fail(l, "timeout"),
            Ok(Closed::Interrupted(module)) => {
                raise(l, Raise::Static(module.interrupted_error()))
            }
            Err(OwnWorker) => raise(
                l,
                Raise::Static(
                    c"llthreads: a pool cannot be closed from one of its own tasks (it would wait for itself)",
                ),
            ),
        }
    }
}

unsafe extern "C-unwind" fn l_size(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned.
    unsafe {
        let pool = check_pool(l, 1);
        ffi::lua_pushinteger(l, (*pool).size() as ffi::lua_Integer);
    }
    1
}

unsafe extern "C-unwind" fn l_pool_gc(l: RawState) -> c_int {
    // SAFETY: called by Lua (as `__gc` or by hand, with anything): acts once, on our
    // block only, emptying it first. Dropping the pool waits for nobody.
    unsafe {
        let slot = block_at(l, 1, &POOL_KEY) as *mut PoolSlot;
        if !slot.is_null() && !(*slot).pool.is_null() {
            let pool = std::mem::replace(&mut (*slot).pool, std::ptr::null_mut());
            guarded(l, || drop(Box::from_raw(pool)));
        }
    }
    0
}

/// `a == b` for pools: every copy of a pool is equal to the others.
unsafe extern "C-unwind" fn l_pool_eq(l: RawState) -> c_int {
    // SAFETY: called by Lua; reads only.
    unsafe {
        let same = match (handle_at(l, 1), handle_at(l, 2)) {
            (Some(a), Some(b)) => (*a).id() == (*b).id(),
            _ => ffi::lua_rawequal(l, 1, 2) != 0,
        };
        ffi::lua_pushboolean(l, same as c_int);
    }
    1
}

unsafe extern "C-unwind" fn l_tostring(l: RawState) -> c_int {
    // SAFETY: called by Lua; raising allowed, nothing owned.
    unsafe {
        // A pool by its identity, the same for every copy of it.
        let (what, p) = if let Some(pool) = handle_at(l, 1) {
            (c"llthreads.pool: %p", (*pool).id())
        } else if !block_at(l, 1, &POOL_KEY).is_null() {
            (c"llthreads.pool: %p", ffi::lua_topointer(l, 1))
        } else if !block_at(l, 1, &TASK_KEY).is_null() {
            (c"llthreads.task: %p", ffi::lua_topointer(l, 1))
        } else {
            type_expected(l, 1, c"llthreads.pool or llthreads.task")
        };
        ffi::lua_pushfstring(l, what.as_ptr(), p);
    }
    1
}

// ---------------------------------------------------------------------------------
// Task methods

/// `task:join([timeout])`: as a thread's join.
unsafe extern "C-unwind" fn l_join(l: RawState) -> c_int {
    // SAFETY: called by Lua; the values are delivered inside the guarded closure
    // (each under its own protected call) and dropped before anything is raised.
    unsafe {
        let task = check_task(l, 1);
        let wait = if ffi::lua_isnoneornil(l, 2) != 0 {
            Wait::Until(None)
        } else {
            let ms = ffi::luaL_checknumber(l, 2);
            if ms == 0.0 {
                Wait::Now
            } else if ms > 0.0 {
                Wait::Until(deadline_in(ms))
            } else {
                Wait::Until(None)
            }
        };
        enum Out {
            Pushed(c_int),
            Fail(&'static str),
            Failed(Vec<u8>),
            RaiseTop,
            Interrupted(Module),
        }
        // Keeps the task alive even if Lua code collects the object meanwhile; moved
        // into the closure, so it is gone before anything is raised.
        Arc::increment_strong_count(task);
        let task = Arc::from_raw(task);
        let out = guarded(l, move || match task.join(wait) {
            Joined::Timeout => Out::Fail("timeout"),
            Joined::Again => Out::Fail("Can't join a task that has already been joined."),
            Joined::Interrupted(module) => Out::Interrupted(module),
            Joined::Cancelled => {
                Out::Failed(b"Task cancelled: the pool was closed before it ran.".to_vec())
            }
            Joined::Failed(text) => {
                let mut msg = b"Error from child thread: ".to_vec();
                msg.extend_from_slice(&text);
                Out::Failed(msg)
            }
            Joined::Returned(values) => {
                // `reserve`, not `lua_checkstack`: on 5.1 and LuaJIT that raises when
                // growing the stack runs out of memory, with `values` owned here.
                let room = c_int::try_from(values.len()).unwrap_or(c_int::MAX - 4) + 4;
                if reserve(l, room).is_err() {
                    task.restore(values);
                    return Out::Fail("too many results to return");
                }
                ffi::lua_pushboolean(l, 1);
                if values.iter().any(|value| deliver(value, l).is_err()) {
                    // The joining state cannot hold them (out of memory): the task
                    // keeps its values for a later join.
                    task.restore(values);
                    return Out::RaiseTop;
                }
                Out::Pushed(values.len() as c_int + 1)
            }
        });
        match out {
            Out::Pushed(n) => n,
            Out::Fail(msg) => fail(l, msg),
            Out::Failed(text) => {
                ffi::lua_pushboolean(l, 0);
                // Protected on `l`.
                let mut body = |l: RawState| -> c_int {
                    push_bytes(l, &text);
                    1
                };
                if protected(l, 0, 1, &mut body) != ffi::LUA_OK {
                    drop(text);
                    raise_top(l);
                }
                2
            }
            Out::RaiseTop => raise_top(l),
            Out::Interrupted(module) => raise(l, Raise::Static(module.interrupted_error())),
        }
    }
}

unsafe extern "C-unwind" fn l_alive(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned.
    unsafe {
        let task = check_task(l, 1);
        ffi::lua_pushboolean(l, (*task).alive() as c_int);
    }
    1
}

unsafe extern "C-unwind" fn l_interrupt(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned.
    unsafe {
        let task = check_task(l, 1);
        let request = api::request_at(l, 2);
        guarded(l, || (*task).interrupt(request));
    }
    0
}

unsafe extern "C-unwind" fn l_task_gc(l: RawState) -> c_int {
    // SAFETY: called by Lua (as `__gc` or by hand): acts once, on our block only.
    unsafe {
        let slot = block_at(l, 1, &TASK_KEY) as *mut TaskSlot;
        if !slot.is_null() && !(*slot).task.is_null() {
            let task = std::mem::replace(&mut (*slot).task, std::ptr::null());
            guarded(l, || drop(Arc::from_raw(task)));
        }
    }
    0
}
