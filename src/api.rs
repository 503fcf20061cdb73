//! The Lua-facing API: the module table and the thread methods.
//!
//! Every entry point is a plain C function without upvalues, so programs can pass
//! `llthreads.new` itself to a child (as a C function) and call it there. Each one
//! has three steps: argument checks, which may raise; the work, in Rust under the
//! panic barrier ([`guarded`]), which owns what it needs and returns plain data (a
//! [`Raise`] describing an error); then the pushes or the raise, once what the work
//! owned is gone. A panic in the work becomes the Lua error
//! `llthreads: internal error (panic): ...`.

use std::ffi::{c_int, c_void, CStr};
use std::time::Duration;

use mlua::ffi;

use crate::barrier::{self, Panicked};
use crate::child::{error_prefix, Frame};
use crate::copy::{prepare_source, transfer, CopyError, Failure, Rules, MAX_DEPTH};
use crate::coroutine;
use crate::errors::{push_message, traceback};
use crate::interrupt::Request;
use crate::names::{Module, Text, ThreadName, LOGGER_FIELD};
use crate::pool;
use crate::prepared;
use crate::raw::{
    arg_error, protected, push_bytes, push_package, raise_top, registry_get, registry_set,
    string_at, tagged_block, RawState,
};
use crate::state::{budget_limit, ChildState};
use crate::thread::{Extra, Joined, StartError, Thread};

pub const VERSION: (ffi::lua_Integer, ffi::lua_Integer, ffi::lua_Integer) = (0, 1, 0);
const VERSION_STRING: &CStr = c"0.1.0";

/// Registry keys (light userdata; one per copy of this library, on purpose: objects of
/// one copy are never handled by another copy's code and statics).
static METATABLE_KEY: u8 = 0;
static MEMORY_LIMIT_KEY: u8 = 0;
static SENTINEL_KEY: u8 = 0;

/// An error to raise once the frame that found it has dropped what it owned.
#[derive(Clone, Copy)]
pub(crate) enum Raise {
    /// The error object is already on top of the stack.
    Top,
    /// `bad argument #n to 'new' (function/userdata/thread types un-supported.)`
    Unsupported(c_int),
    /// `Hit maximum copy depth (31 > 30).`
    TooDeep,
    /// A message with no allocation behind it.
    Static(&'static CStr),
    /// `bad argument #n to '<f>' (text)`.
    Argument(c_int, Text),
    /// The work panicked.
    Panic(Panicked),
}

/// # Safety
/// Called from a C function Lua called, in a frame owning nothing with `Drop`.
pub(crate) unsafe fn raise(l: RawState, what: Raise) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        match what {
            Raise::Top => raise_top(l),
            Raise::Unsupported(n) => {
                arg_error(l, n, c"function/userdata/thread types un-supported.")
            }
            Raise::TooDeep => {
                ffi::lua_pushfstring(
                    l,
                    c"Hit maximum copy depth (%d > %d).".as_ptr(),
                    MAX_DEPTH + 1,
                    MAX_DEPTH,
                );
                raise_top(l)
            }
            Raise::Static(msg) => {
                ffi::lua_pushstring(l, msg.as_ptr());
                raise_top(l)
            }
            Raise::Argument(n, text) => {
                push_bytes(l, text.as_bytes());
                ffi::luaL_argerror(l, n, ffi::lua_tostring(l, -1));
                raise_top(l)
            }
            Raise::Panic(panicked) => {
                push_bytes(l, panicked.message());
                raise_top(l)
            }
        }
    }
}

/// Runs an entry point's work under the panic barrier and returns its value; a panic
/// is raised as a Lua error once the work and everything it owned are gone.
///
/// # Safety
/// As for [`raise`]; `work` makes no Lua call that can raise (calls through
/// `raw::protected` are fine: their errors stop inside it).
pub(crate) unsafe fn guarded<T>(l: RawState, work: impl FnOnce() -> T) -> T {
    match barrier::catch(work) {
        Ok(value) => value,
        Err(panicked) => {
            let panicked = unbox(panicked);
            // SAFETY: forwarded contract; nothing of `work` is left.
            unsafe { raise(l, Raise::Panic(panicked)) }
        }
    }
}

/// Moves a value out of its box and frees the box before returning, for a caller
/// that raises next. `let v = *boxed;` leaves the emptied box to be freed at the end
/// of its scope, which a raise never reaches: on PUC Lua (a longjmp) every raise
/// leaked the box (a `Raise` is ~270 bytes); only an unwinding raise (LuaJIT's)
/// freed it, on the way out.
// Taking the box by value is the point (clippy's boxed_local): it is freed here.
#[allow(clippy::boxed_local)]
pub(crate) fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

impl From<CopyError> for Raise {
    fn from(e: CopyError) -> Raise {
        match e {
            CopyError::TooDeep => Raise::TooDeep,
            CopyError::NoRoom(why) => {
                Raise::Static(why.message(c"stack overflow (no room to copy a table)"))
            }
            CopyError::Unsupported { index } => Raise::Unsupported(index),
            CopyError::Refused { index, why, .. } => Raise::Argument(index, why),
            CopyError::NeedNames => {
                Raise::Static(c"llthreads: the names of C functions could not be looked up")
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Module table

/// Builds the module table on top of the stack.
///
/// # Safety
/// Called from a `luaopen_*` function (raising allowed, nothing owned).
pub unsafe fn open(l: RawState, module: Module) -> c_int {
    let new: ffi::lua_CFunction = match module {
        Module::Llthreads => l_new_llthreads,
        Module::Llthreads2 => l_new_llthreads2,
    };
    // SAFETY: see the function's contract.
    unsafe {
        guarded(l, || {
            barrier::install_hook();
            crate::diag::init();
        });
        count_pool_user(l);
        ensure_metatable(l);
        ffi::lua_settop(l, -2);
        ffi::lua_createtable(l, 0, 8);
        set_function(l, c"new", new);
        set_function(l, c"set_logger", l_set_logger);
        set_function(l, c"version", l_version);
        set_function(l, c"set_memory_limit", l_set_memory_limit);
        ffi::lua_pushstring(l, VERSION_STRING.as_ptr());
        ffi::lua_setfield(l, -2, c"_VERSION".as_ptr());
        ffi::lua_pushstring(l, module.interrupted_error().as_ptr());
        ffi::lua_setfield(l, -2, c"interrupted_error".as_ptr());
    }
    1
}

/// Marks a state that loaded the module, in its registry: the thread pool keeps idle
/// workers while such a state is open (see `pool.rs`). The mark's `__gc` tells the
/// pool when the state closes.
#[repr(C)]
struct PoolUser {
    /// `&SENTINEL_KEY`: tells the mark from any other userdata of the same size.
    tag: *const u8,
    /// 1 while the pool counts this state.
    counted: u8,
}

/// Counts the state `l` as a user of the pool, once per state.
///
/// # Safety
/// Raising allowed, nothing owned; three free slots.
unsafe fn count_pool_user(l: RawState) {
    // SAFETY: see the function's contract. The mark is counted only after the last
    // raising call, so its `__gc` releases exactly what was counted.
    unsafe {
        let known = registry_get(l, &SENTINEL_KEY) != ffi::LUA_TNIL;
        ffi::lua_settop(l, -2);
        if known {
            return;
        }
        let mark = ffi::lua_newuserdata(l, std::mem::size_of::<PoolUser>()) as *mut PoolUser;
        mark.write(PoolUser {
            tag: &SENTINEL_KEY,
            counted: 0,
        });
        ffi::lua_createtable(l, 0, 1);
        set_function(l, c"__gc", l_pool_user_gone);
        ffi::lua_setmetatable(l, -2);
        registry_set(l, &SENTINEL_KEY);
        pool::add_user();
        (*mark).counted = 1;
    }
}

/// `__gc` of the pool-user mark: the state is closing (or the mark was dropped from
/// its registry). Anything but a counted mark of this library copy is ignored.
unsafe extern "C-unwind" fn l_pool_user_gone(l: RawState) -> c_int {
    // SAFETY: called by Lua; the type and size are checked before the userdata's
    // bytes are read, and any bytes are valid for a pointer and a `u8`.
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TUSERDATA
            || ffi::lua_rawlen(l, 1) as usize != std::mem::size_of::<PoolUser>()
        {
            return 0;
        }
        let mark = ffi::lua_touserdata(l, 1) as *mut PoolUser;
        if !std::ptr::eq((*mark).tag, &SENTINEL_KEY) || (*mark).counted != 1 {
            return 0;
        }
        (*mark).counted = 0;
        guarded(l, pool::remove_user);
    }
    0
}

/// # Safety
/// Table on top; raising allowed.
pub(crate) unsafe fn set_function(l: RawState, name: &CStr, f: ffi::lua_CFunction) {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::lua_pushcfunction(l, f);
        ffi::lua_setfield(l, -2, name.as_ptr());
    }
}

/// Pushes the thread metatable, creating it in this state's registry if needed.
/// (`new` may run in a state where the module was never opened: a child that got
/// `llthreads.new` as a C function.)
///
/// # Safety
/// Raising allowed, nothing owned; three free slots.
unsafe fn ensure_metatable(l: RawState) {
    // SAFETY: see the function's contract.
    unsafe {
        if registry_get(l, &METATABLE_KEY) == ffi::LUA_TTABLE {
            return;
        }
        ffi::lua_settop(l, -2);
        ffi::lua_createtable(l, 0, 4);
        ffi::lua_createtable(l, 0, 8);
        set_function(l, c"start", l_start);
        set_function(l, c"join", l_join);
        set_function(l, c"alive", l_alive);
        set_function(l, c"started", l_started);
        set_function(l, c"detached", l_detached);
        set_function(l, c"joinable", l_joinable);
        set_function(l, c"interrupt", l_interrupt);
        ffi::lua_setfield(l, -2, c"__index".as_ptr());
        set_function(l, c"__gc", l_gc);
        set_function(l, c"__tostring", l_tostring);
        ffi::lua_pushvalue(l, -1);
        registry_set(l, &METATABLE_KEY);
    }
}

unsafe extern "C-unwind" fn l_version(l: RawState) -> c_int {
    // SAFETY: called by Lua; pushes within LUA_MINSTACK.
    unsafe {
        ffi::lua_pushinteger(l, VERSION.0);
        ffi::lua_pushinteger(l, VERSION.1);
        ffi::lua_pushinteger(l, VERSION.2);
    }
    3
}

unsafe extern "C-unwind" fn l_set_logger(l: RawState) -> c_int {
    // SAFETY: called by Lua; the frame owns nothing, so raising is fine.
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TFUNCTION {
            arg_error(l, 1, c"function expected");
        }
        ffi::lua_settop(l, 1);
        ffi::lua_setfield(l, ffi::LUA_REGISTRYINDEX, LOGGER_FIELD.as_ptr());
    }
    0
}

unsafe extern "C-unwind" fn l_set_memory_limit(l: RawState) -> c_int {
    // SAFETY: called by Lua; the frame owns nothing, so raising is fine.
    unsafe {
        if cfg!(feature = "luajit") {
            raise(l, Raise::Static(c"memory limit is not supported on LuaJIT"));
        }
        if ffi::lua_isnoneornil(l, 1) != 0 {
            ffi::lua_pushnil(l);
        } else {
            let n = ffi::luaL_checknumber(l, 1);
            if n.is_nan() || n < 0.0 {
                arg_error(l, 1, c"non-negative number expected");
            }
            if n == 0.0 {
                ffi::lua_pushnil(l);
            } else {
                ffi::lua_pushnumber(l, n);
            }
        }
        registry_set(l, &MEMORY_LIMIT_KEY);
    }
    0
}

/// The byte budget of a state that `l` creates now: the tighter of what
/// `set_memory_limit` asked for in `l` and `l`'s own budget, so that a limited state
/// never creates a looser one, whatever its code asks for.
///
/// # Safety
/// Valid state, run by this thread, with one free slot; never raises.
pub(crate) unsafe fn memory_limit(l: RawState) -> Option<usize> {
    // SAFETY: see the function's contract.
    let (asked, own) = unsafe {
        let asked = (registry_get(l, &MEMORY_LIMIT_KEY) == ffi::LUA_TNUMBER)
            .then(|| ffi::lua_tonumber(l, -1) as usize);
        ffi::lua_settop(l, -2);
        (asked, budget_limit(l))
    };
    match (asked, own) {
        (Some(asked), Some(own)) => Some(asked.min(own)),
        (asked, own) => asked.or(own),
    }
}

// ---------------------------------------------------------------------------------
// new

unsafe extern "C-unwind" fn l_new_llthreads(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { new(l, Module::Llthreads) }
}

unsafe extern "C-unwind" fn l_new_llthreads2(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { new(l, Module::Llthreads2) }
}

/// `new(code, ...)`.
///
/// # Safety
/// Called from a C function Lua called.
pub(crate) unsafe fn new(l: RawState, module: Module) -> c_int {
    // SAFETY: see `create`; the check raises before anything is owned.
    unsafe {
        ffi::luaL_checklstring(l, 1, std::ptr::null_mut());
        let nargs = ffi::lua_gettop(l);
        create(l, module, Setup::chunk(1, 2, nargs))
    }
}

/// Where a new thread's code is on the caller's stack.
#[derive(Clone, Copy)]
pub(crate) enum Code {
    /// A string of source or bytecode at this index, compiled in the child.
    Source(c_int),
    /// A function at [`Setup::first`], copied with the values.
    Function,
}

/// How [`create`] builds a thread: where its code and values are on the caller's
/// stack, and what the options of `spawn` and `new{...}` add.
pub(crate) struct Setup {
    pub code: Code,
    /// The values copied into the child (`first..=last`; for [`Code::Function`] the
    /// function is the first of them).
    pub first: c_int,
    pub last: c_int,
    pub rules: Rules,
    /// The options' memory limit (the creator's own limit still binds).
    pub memory_limit: Option<usize>,
    /// Index of the creator's `package.path`, with its `package.cpath` just above
    /// (strings, or nil where there are none), for the child to start with.
    pub paths: Option<c_int>,
    /// Index of a table of module name → loader for the child's `package.preload`.
    pub preload: Option<c_int>,
    /// Kept by the thread object; `None` for `new(code, ...)`.
    pub extra: Option<Extra>,
    /// `new{code, ...}`: the code was moved from `[1]` of argument 1 to stack index 2,
    /// so each of the caller's later arguments sits one slot above its number.
    pub code_moved: bool,
}

impl Setup {
    /// `new(code, ...)`'s: source at `code`, values by the contract's rules.
    pub fn chunk(code: c_int, first: c_int, last: c_int) -> Setup {
        Setup {
            code: Code::Source(code),
            first,
            last,
            rules: Rules::ARGUMENTS,
            memory_limit: None,
            paths: None,
            preload: None,
            extra: None,
            code_moved: false,
        }
    }

    /// The error for a refused copy of the values, naming the caller's argument that
    /// holds the refused value (not the stack slot it was copied from).
    fn refusal(&self, e: CopyError) -> Raise {
        let argument = |index: c_int| {
            if self.code_moved {
                (index - 1).max(1)
            } else {
                index
            }
        };
        match e {
            CopyError::Unsupported { index } => Raise::Unsupported(argument(index)),
            CopyError::Refused { index, why, .. } => Raise::Argument(argument(index), why),
            e => e.into(),
        }
    }
}

/// The argument that holds the options of `spawn` and `new{...}`.
pub(crate) const OPTIONS_ARGUMENT: c_int = 1;

/// Makes a thread object for `setup` and pushes it.
///
/// # Safety
/// Called from a C function Lua called, with the stack as `setup` says, nothing above
/// its indices but what it names.
pub(crate) unsafe fn create(l: RawState, module: Module, mut setup: Setup) -> c_int {
    // SAFETY: raising calls happen before anything is owned (argument check, the
    // userdata) or after `build` returned and dropped what it owned. The stack is not
    // grown here: Lua gives a C function LUA_MINSTACK (20) free slots above its
    // arguments, more than this call ever pushes (the object, the metatable being
    // made, the copier's `SOURCE_SLOTS`, an error message), so `new` takes as many
    // arguments as the caller could pass.
    unsafe {
        let top = ffi::lua_gettop(l);
        let levels = prepare_source(l, setup.first, top);
        let limit = match (memory_limit(l), setup.memory_limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The object exists before the child state, so a failure after this point
        // leaves an empty object for the collector, never a leaked state.
        let at = top + 1;
        let ud = ffi::lua_newuserdata(l, std::mem::size_of::<Slot>()) as *mut Slot;
        // Each allocation in this state may run a finalizer, and Lua code there can
        // replace this frame's values (`debug.setlocal` on a C frame): the object
        // could then be collected under `ud`. So `ud` is used only while it is still
        // the value at `at`, and the code string is read after the last allocation.
        if !still_at(l, at, ud.cast()) {
            raise(l, Raise::Static(TAMPERED));
        }
        ud.write(Slot {
            tag: &METATABLE_KEY,
            thread: std::ptr::null_mut(),
        });
        let slot = &raw mut (*ud).thread;
        ensure_metatable(l);
        if !still_at(l, at, ud.cast()) {
            raise(l, Raise::Static(TAMPERED));
        }
        ffi::lua_setmetatable(l, at);
        let code = match setup.code {
            Code::Source(idx) => {
                let mut len = 0usize;
                let code = ffi::luaL_checklstring(l, idx, &mut len);
                Some(std::slice::from_raw_parts(code.cast::<u8>(), len))
            }
            Code::Function => {
                if ffi::lua_type(l, setup.first) != ffi::LUA_TFUNCTION {
                    raise(l, Raise::Static(TAMPERED));
                }
                None
            }
        };
        let extra = setup.extra.take();
        let built = guarded(l, || {
            build(l, code, &setup, limit, levels).map(|state| {
                Box::into_raw(Box::new(Thread::new(module, state, extra.map(Box::new))))
            })
        });
        match built {
            Ok(thread) if still_at(l, at, ud.cast()) && (*slot).is_null() => {
                slot.write(thread);
                1
            }
            Ok(thread) => {
                guarded(l, || drop(Box::from_raw(thread)));
                raise(l, Raise::Static(TAMPERED))
            }
            Err(what) => raise(l, what),
        }
    }
}

/// The error when Lua code changed `new`'s own values while it ran.
const TAMPERED: &CStr = c"llthreads: new's values were changed by Lua code while it ran";

/// Whether the value at `idx` is still the userdata whose block is `block`.
///
/// # Safety
/// `l` is valid; never raises.
unsafe fn still_at(l: RawState, idx: c_int, block: *mut c_void) -> bool {
    // SAFETY: type and address reads only.
    unsafe { ffi::lua_type(l, idx) == ffi::LUA_TUSERDATA && ffi::lua_touserdata(l, idx) == block }
}

/// Makes the child state: libraries, message handler, compiled chunk (or copied
/// function), the options' paths and preloads, copied arguments.
///
/// # Safety
/// `l` is the calling state with the values `setup` names, `code` (NUL-terminated
/// as every Lua string is) for source code, and the room `copy::prepare_source` made
/// (`levels` table levels).
unsafe fn build(
    l: RawState,
    code: Option<&[u8]>,
    setup: &Setup,
    limit: Option<usize>,
    levels: c_int,
) -> Result<ChildState, Raise> {
    // A prepared state (see `prepared.rs`) is this one up to the chunk, made earlier
    // by a parked worker.
    let (state, prepared) = match prepared::take(limit) {
        Some(state) => (state, true),
        None => (
            ChildState::new(limit).ok_or(Raise::Static(c"not enough memory"))?,
            false,
        ),
    };
    let c = state.raw();
    let mut load_failed = false;
    let mut body = |c: RawState| -> c_int {
        // SAFETY: protected on the child `c`, which nobody else uses yet.
        unsafe {
            if !prepared {
                ffi::luaL_openlibs(c);
                // Before any code of the chunk's, so that interrupts follow its
                // coroutines.
                coroutine::install(c);
            }
            ffi::lua_pushcfunction(c, traceback);
            let Some(code) = code else {
                return Frame::HANDLER;
            };
            let name = code.as_ptr().cast();
            if ffi::luaL_loadbuffer(c, code.as_ptr().cast(), code.len(), name) != ffi::LUA_OK {
                load_failed = true;
                return 1;
            }
            Frame::CHUNK
        }
    };
    // SAFETY: a fresh state has LUA_MINSTACK free slots; the body keeps its contract.
    let status = unsafe { protected(c, 0, ffi::LUA_MULTRET, &mut body) };
    if status != ffi::LUA_OK || load_failed {
        // SAFETY: the child's error object is on its top; `l` has room.
        unsafe { push_message(c, l, b"") };
        return Err(Raise::Top);
    }
    // SAFETY: `c` is fresh and used by this thread only; `l` is only read.
    unsafe {
        if let Some(paths) = setup.paths {
            give_paths(l, c, paths)?;
        }
        if let Some(preload) = setup.preload {
            give_preload(l, c, preload, levels)?;
        }
    }
    // SAFETY: `c` holds `[handler, chunk]` or `[handler]`; the parent `l` is only read,
    // with the free slots Lua gives `new` (see there).
    match unsafe { transfer(l, c, setup.first, setup.last, setup.rules, levels) } {
        Ok(_) => Ok(state),
        Err(Failure::Copy(e)) => Err(setup.refusal(e)),
        Err(Failure::Raised) => {
            // SAFETY: as above.
            unsafe { push_message(c, l, b"") };
            Err(Raise::Top)
        }
    }
}

/// Sets the child's `package.path` and `package.cpath` to the strings at `at` and
/// `at + 1` of the parent (where they are strings).
///
/// # Safety
/// `c` is fresh, used by this thread only; `l` holds those values and is only read.
unsafe fn give_paths(l: RawState, c: RawState, at: c_int) -> Result<(), Raise> {
    let mut body = |c: RawState| -> c_int {
        // SAFETY: protected on `c`; `l` is read without raising (strings only).
        unsafe {
            push_package(c);
            for (idx, field) in [(at, c"path"), (at + 1, c"cpath")] {
                if let Some(value) = string_at(l, idx) {
                    ffi::lua_pushstring(c, field.as_ptr());
                    push_bytes(c, value);
                    ffi::lua_rawset(c, -3);
                }
            }
        }
        0
    };
    // SAFETY: see the function's contract; the body owns nothing and does not panic.
    match unsafe { protected(c, 0, 0, &mut body) } {
        ffi::LUA_OK => Ok(()),
        _ => {
            // SAFETY: the error object is on `c`'s top.
            unsafe { push_message(c, l, b"") };
            Err(Raise::Top)
        }
    }
}

/// Copies the table of loaders at `l[at]` (module name → function) into the child's
/// `package.preload`.
///
/// # Safety
/// As for [`give_paths`], with the room `prepare_source` made (`levels`).
unsafe fn give_preload(l: RawState, c: RawState, at: c_int, levels: c_int) -> Result<(), Raise> {
    // SAFETY: see the function's contract.
    match unsafe { transfer(l, c, at, at, Rules::VALUES, levels) } {
        Ok(_) => {}
        // The table sits on the stack above the arguments: name the option.
        Err(Failure::Copy(CopyError::Refused { why, .. })) => {
            let mut text = Text::new("option 'preload': ");
            text.push(why.as_bytes());
            return Err(Raise::Argument(OPTIONS_ARGUMENT, text));
        }
        Err(Failure::Copy(e)) => return Err(e.into()),
        Err(Failure::Raised) => {
            // SAFETY: the error object is on `c`'s top.
            unsafe { push_message(c, l, b"") };
            return Err(Raise::Top);
        }
    }
    let mut body = |c: RawState| -> c_int {
        // SAFETY: protected on `c`; the copied table is argument 1; raw operations.
        unsafe {
            push_package(c);
            ffi::lua_pushstring(c, c"preload".as_ptr());
            ffi::lua_rawget(c, -2);
            if ffi::lua_type(c, -1) != ffi::LUA_TTABLE || ffi::lua_type(c, 1) != ffi::LUA_TTABLE {
                ffi::lua_pushstring(
                    c,
                    c"llthreads: the new state has no package.preload".as_ptr(),
                );
                ffi::lua_error(c);
            }
            let preload = ffi::lua_gettop(c);
            ffi::lua_pushnil(c);
            while ffi::lua_next(c, 1) != 0 {
                ffi::lua_pushvalue(c, -2);
                ffi::lua_insert(c, -2);
                ffi::lua_rawset(c, preload);
            }
        }
        0
    };
    // SAFETY: the copy is on `c`'s top (the body's argument); the body owns nothing
    // and does not panic.
    match unsafe { protected(c, 1, 0, &mut body) } {
        ffi::LUA_OK => Ok(()),
        _ => {
            // SAFETY: the error object is on `c`'s top.
            unsafe { push_message(c, l, b"") };
            Err(Raise::Top)
        }
    }
}

// ---------------------------------------------------------------------------------
// Methods

/// The thread object at `idx`, or an argument error.
///
/// # Safety
/// Called from a C function Lua called, in a frame owning nothing with `Drop`; two
/// free slots. The returned pointer is valid until the object is collected.
unsafe fn check_thread(l: RawState, idx: c_int) -> *mut Thread {
    // SAFETY: see the function's contract. The size check rejects userdata of other
    // libraries before the slot is read.
    unsafe {
        let slot = check_slot(l, idx);
        let thread = *slot;
        if thread.is_null() {
            arg_error(l, idx, c"thread object already collected");
        }
        thread
    }
}

/// The slot of our userdata at `idx` (possibly emptied by `__gc`), or the argument
/// error `LLThread expected, got <type>` (`got no value` when there is none).
///
/// # Safety
/// As for [`check_thread`].
unsafe fn check_slot(l: RawState, idx: c_int) -> *mut *mut Thread {
    // SAFETY: see the function's contract; `lua_typename` gives a static string.
    unsafe {
        let slot = thread_slot(l, idx);
        if slot.is_null() {
            let got = ffi::lua_typename(l, ffi::lua_type(l, idx));
            ffi::lua_pushfstring(l, c"LLThread expected, got %s".as_ptr(), got);
            arg_error(l, idx, CStr::from_ptr(ffi::lua_tostring(l, -1)));
        }
        slot
    }
}

/// The block of a thread object. The tag tells our objects from another library's
/// userdata that Lua code gave our metatable (`debug.setmetatable(io.stdout, mt)`):
/// the metatable alone proves nothing once `debug` is there, and a foreign block of
/// the same size would otherwise be read as a `Thread` pointer.
#[repr(C)]
struct Slot {
    /// Always the address of this library copy's `METATABLE_KEY`.
    tag: *const u8,
    /// Null until `new` has built the thread, and again once it is collected.
    thread: *mut Thread,
}

/// The slot of our userdata at `idx`, or null when the value is something else.
///
/// # Safety
/// Valid state with two free slots; never raises.
pub(crate) unsafe fn thread_slot(l: RawState, idx: c_int) -> *mut *mut Thread {
    // SAFETY: see the function's contract; a block `tagged_block` returns is a `Slot`.
    unsafe {
        let ud = tagged_block(l, idx, std::mem::size_of::<Slot>(), &METATABLE_KEY) as *mut Slot;
        if ud.is_null() {
            std::ptr::null_mut()
        } else {
            &raw mut (*ud).thread
        }
    }
}

/// Pushes `nil, msg` and returns 2.
///
/// # Safety
/// Raising allowed (nothing owned), two free slots.
pub(crate) unsafe fn fail(l: RawState, msg: impl AsRef<[u8]>) -> c_int {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::lua_pushnil(l);
        push_bytes(l, msg.as_ref());
    }
    2
}

unsafe extern "C-unwind" fn l_start(l: RawState) -> c_int {
    // SAFETY: called by Lua. `check_thread` gives a live object; the outcome is turned
    // into plain data (the error text copied to a stack buffer) before any push.
    unsafe {
        let thread = check_thread(l, 1);
        let (detached, joinable) = if ffi::lua_gettop(l) <= 1 {
            (*thread).default_modes()
        } else {
            let detached = ffi::lua_toboolean(l, 2) != 0;
            let joinable = if ffi::lua_type(l, 3) == ffi::LUA_TNONE {
                !detached
            } else {
                ffi::lua_toboolean(l, 3) != 0
            };
            (detached, joinable)
        };
        let outcome = guarded(l, || match (*thread).start(detached, joinable) {
            Ok(()) => None,
            Err(StartError::AlreadyStarted) => Some(Text::new("Thread already started.")),
            Err(StartError::Os(e)) => Some(os_error_text(&e)),
        });
        match outcome {
            None => {
                ffi::lua_settop(l, 1);
                1
            }
            Some(text) => fail(l, text.as_bytes()),
        }
    }
}

/// The system's text for `e`, as `strerror` gives it.
pub(crate) fn os_error_text(e: &std::io::Error) -> Text {
    let text = e.to_string();
    // Rust appends " (os error N)"; the C original gives the bare strerror text.
    Text::new(text.split(" (os error").next().unwrap_or(""))
}

/// What `join` found, as plain data.
enum JoinOutcome {
    /// `nil, message`.
    Fail(&'static str),
    /// `true` (the child closed its own state).
    Closed,
    /// Results already pushed: this many.
    Pushed(c_int),
    Raise(Raise),
}

unsafe extern "C-unwind" fn l_join(l: RawState) -> c_int {
    // SAFETY: called by Lua. (1) Arguments are checked before the join. (2) A state
    // handed back by `join` is dropped inside `push_results`, or given back to the
    // thread, under the barrier, before anything is raised. (3) `thread` is used
    // after the copy (which may run Lua code) only when argument 1 is still the same
    // userdata, alive on the stack, whose slot still points to it.
    unsafe {
        let thread = check_thread(l, 1);
        let (block, slot) = (ffi::lua_touserdata(l, 1), thread_slot(l, 1));
        let timeout = if ffi::lua_isnoneornil(l, 2) != 0 {
            None
        } else {
            duration_from_ms(ffi::luaL_checknumber(l, 2))
        };
        let name = (*thread).name().copied();
        let rules = if (*thread).copies_functions() {
            Rules::VALUE_RESULTS
        } else {
            Rules::RESULTS
        };
        let outcome = guarded(l, || match (*thread).join(timeout) {
            Err(refusal) => JoinOutcome::Fail(refusal.message()),
            Ok(Joined::Timeout) => JoinOutcome::Fail("timeout"),
            Ok(Joined::Interrupted(module)) => {
                JoinOutcome::Raise(Raise::Static(module.interrupted_error()))
            }
            Ok(Joined::Closed) => JoinOutcome::Closed,
            Ok(Joined::State(state, status)) => match push_results(l, state, status, name, rules) {
                Ok(n) => JoinOutcome::Pushed(n),
                Err((what, kept)) => {
                    // Lua code (a finalizer, with `debug.setlocal`) may have replaced
                    // argument 1 or emptied its block during the copy: the state goes
                    // back only to the very thread object that gave it.
                    if let Some(state) = kept {
                        if still_at(l, 1, block) && *slot == thread {
                            (*thread).give_back(state);
                        }
                    }
                    JoinOutcome::Raise(what)
                }
            },
        });
        match outcome {
            JoinOutcome::Fail(msg) => fail(l, msg),
            JoinOutcome::Closed => {
                ffi::lua_pushboolean(l, 1);
                1
            }
            JoinOutcome::Pushed(n) => n,
            JoinOutcome::Raise(what) => raise(l, what),
        }
    }
}

/// Milliseconds to a timeout; negative, NaN or absurdly large means no limit.
fn duration_from_ms(ms: f64) -> Option<Duration> {
    (ms >= 0.0)
        .then(|| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .flatten()
}

/// Pushes `true, results...` (copied by `rules`) or `false, "Error from child
/// thread: " .. msg` (`"Error from child thread 'name': "` for a named thread), then
/// closes the child state. When the copy raised in `l` (out of memory, most likely)
/// the state is handed back instead, its results as they were, for a later `join`:
/// the joining state's failure must not lose them, as a channel keeps a message its
/// receiver could not hold.
///
/// # Safety
/// `l` is the calling state; `state` finished running (its stack is
/// `[handler, results...]` with room left by the child runtime). Raises nothing: the
/// pushes onto `l` either cannot raise or run protected.
unsafe fn push_results(
    l: RawState,
    state: ChildState,
    status: c_int,
    name: Option<ThreadName>,
    rules: Rules,
) -> Result<c_int, (Raise, Option<ChildState>)> {
    let c = state.raw();
    let prefix = error_prefix(b"Error from child thread", name.as_ref());
    // SAFETY: `l` is the calling state with LUA_MINSTACK slots in a C function and
    // owns nothing here; the finished child `c` is only read, with the room the child
    // runtime left on its stack.
    let outcome = unsafe {
        if status != ffi::LUA_OK {
            ffi::lua_pushboolean(l, 0);
            push_message(c, l, prefix.as_bytes());
            Ok(2)
        } else {
            ffi::lua_pushboolean(l, 1);
            let last = ffi::lua_gettop(c);
            // Room on the child's stack for walking tables, made before the copy: on
            // 5.1 and LuaJIT that may run the child's finalizers, which must not run
            // in the middle of the copy.
            let levels = prepare_source(c, Frame::FIRST_RESULT, last);
            let copied = transfer(c, l, Frame::FIRST_RESULT, last, rules, levels);
            if copied.is_err() {
                // What the copier left above the results goes; never raises.
                ffi::lua_settop(c, last);
            }
            copied.map(|n| n + 1)
        }
    };
    let result = match outcome {
        Ok(n) => Ok(n),
        Err(Failure::Raised) => return Err((Raise::Top, Some(state))),
        Err(Failure::Copy(e)) => Err((e.into(), None)),
    };
    drop(state);
    log::debug!("parent closed the child state in join");
    result
}

unsafe extern "C-unwind" fn l_alive(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned across the pushes.
    unsafe {
        let thread = check_thread(l, 1);
        match guarded(l, || (*thread).alive()) {
            Ok(alive) => {
                ffi::lua_pushboolean(l, alive as c_int);
                1
            }
            Err(refusal) => fail(l, refusal.message()),
        }
    }
}

/// Generates the three flag getters.
macro_rules! flag_getter {
    ($name:ident, $method:ident) => {
        unsafe extern "C-unwind" fn $name(l: RawState) -> c_int {
            // SAFETY: called by Lua; nothing owned across the push.
            unsafe {
                let thread = check_thread(l, 1);
                let flag = guarded(l, || (*thread).$method());
                ffi::lua_pushboolean(l, flag as c_int);
            }
            1
        }
    };
}
flag_getter!(l_started, started);
flag_getter!(l_detached, detached);
flag_getter!(l_joinable, joinable);

/// `interrupt`'s argument at `idx`: none or nil asks once, true on every event, false
/// withdraws the request.
///
/// # Safety
/// `l` is valid; never raises.
pub(crate) unsafe fn request_at(l: RawState, idx: c_int) -> Request {
    // SAFETY: type reads only.
    unsafe {
        if ffi::lua_isnoneornil(l, idx) != 0 {
            Request::Once
        } else if ffi::lua_toboolean(l, idx) != 0 {
            Request::Always
        } else {
            Request::Remove
        }
    }
}

unsafe extern "C-unwind" fn l_interrupt(l: RawState) -> c_int {
    // SAFETY: called by Lua; nothing owned.
    unsafe {
        let thread = check_thread(l, 1);
        let request = request_at(l, 2);
        guarded(l, || (*thread).interrupt(request));
    }
    0
}

unsafe extern "C-unwind" fn l_gc(l: RawState) -> c_int {
    // Unlike the methods, this never raises on a wrong value: it runs as a finalizer
    // for anything Lua code gave our metatable (a table, say), and a finalizer's error
    // surfaces on 5.2 and 5.3 in whatever unrelated code ran the collector.
    // SAFETY: called by Lua (as `__gc`, or directly by a user). The slot is emptied
    // before the object drops, so a second call or a later method sees "collected".
    unsafe {
        let slot = thread_slot(l, 1);
        if !slot.is_null() && !(*slot).is_null() {
            let thread = *slot;
            *slot = std::ptr::null_mut();
            guarded(l, || drop(Box::from_raw(thread)));
        }
    }
    0
}

unsafe extern "C-unwind" fn l_tostring(l: RawState) -> c_int {
    // SAFETY: called by Lua; raising allowed (nothing owned).
    unsafe {
        check_slot(l, 1);
        let p: *const c_void = ffi::lua_topointer(l, 1);
        ffi::lua_pushfstring(l, c"llthreads.thread: %p".as_ptr(), p);
    }
    1
}
