//! The Lua-facing entry points that take options and run functions:
//! `llthreads.spawn([options,] fn, ...)` and `llthreads.new{code, options...}`.
//!
//! Both build on `api::create`, with the values copied by `Rules::VALUES` (Lua
//! functions cross with their upvalues). `new(code, ...)` without a table is the
//! contract's and goes to `api` unchanged. As in `api.rs`, every argument is checked
//! (raising) before anything is owned.

use std::ffi::{c_int, CStr};

use mlua::ffi;

use crate::api::{self, create, fail, guarded, thread_slot, Code, Setup};
use crate::copy::Rules;
use crate::names::{Module, Text, ThreadName};
use crate::raw::{arg_error, raw_field, string_at, RawState};
use crate::thread::{Extra, StartError};

/// The smallest `stack_size` accepted: twice the most stack that Lua code was
/// measured to take before Lua's own limit stops its C recursion with an error (200
/// nested C calls through `string.gsub`, `string.format`, `load`, `table.sort`,
/// metamethods; `bench/`-style probe in `spec/spawn_options_spec.lua`): 2 MiB on
/// 5.1–5.3, whose `luaL_Buffer` holds 8 KiB, 512 KiB on 5.4, and 4 MiB on LuaJIT.
/// Anything smaller could crash the process where Lua would raise "C stack
/// overflow". (LuaJIT does not bound `string.gsub`'s recursion at all: no stack size
/// makes that one safe there.)
#[cfg(any(feature = "lua51", feature = "lua52", feature = "lua53"))]
pub const MIN_STACK: usize = 4 << 20;
#[cfg(not(any(
    feature = "lua51",
    feature = "lua52",
    feature = "lua53",
    feature = "luajit"
)))]
pub const MIN_STACK: usize = 1 << 20;
#[cfg(feature = "luajit")]
pub const MIN_STACK: usize = 8 << 20;

/// The largest `stack_size` accepted: 1 GiB.
pub const MAX_STACK: usize = 1 << 30;

/// Opens the module (see `api::open`) with `spawn` and the table form of `new`.
///
/// # Safety
/// Called from a `luaopen_*` function (raising allowed, nothing owned).
pub unsafe fn open(l: RawState, module: Module) -> c_int {
    let (new, spawn): (ffi::lua_CFunction, ffi::lua_CFunction) = match module {
        Module::Llthreads => (l_new_llthreads, l_spawn_llthreads),
        Module::Llthreads2 => (l_new_llthreads2, l_spawn_llthreads2),
    };
    // SAFETY: see the function's contract; the module table is left on top.
    unsafe {
        let n = api::open(l, module);
        api::set_function(l, c"new", new);
        api::set_function(l, c"spawn", spawn);
        n
    }
}

unsafe extern "C-unwind" fn l_new_llthreads(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { new(l, Module::Llthreads) }
}

unsafe extern "C-unwind" fn l_new_llthreads2(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { new(l, Module::Llthreads2) }
}

unsafe extern "C-unwind" fn l_spawn_llthreads(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { spawn(l, Module::Llthreads) }
}

unsafe extern "C-unwind" fn l_spawn_llthreads2(l: RawState) -> c_int {
    // SAFETY: called by Lua.
    unsafe { spawn(l, Module::Llthreads2) }
}

/// Which entry point reads the options: `new{...}` holds its code at `[1]`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Entry {
    Spawn,
    New,
}

/// The options of `spawn` and `new{...}`, checked.
#[derive(Default)]
struct Options {
    extra: Extra,
    memory_limit: Option<usize>,
    /// `paths = false` turns the creator's paths off.
    no_paths: bool,
    /// A `preload` table was given (it is pushed by [`setup`]).
    preload: bool,
}

/// Raises `bad argument #idx to '<f>' (<text>)`.
///
/// # Safety
/// As for `arg_error`.
pub(crate) unsafe fn option_error(l: RawState, idx: c_int, text: &CStr) -> ! {
    // SAFETY: see the function's contract.
    unsafe { arg_error(l, idx, text) }
}

/// Checks the options table at `idx`.
///
/// # Safety
/// Called from a C function Lua called, in a frame owning nothing; raises argument
/// errors for bad options.
unsafe fn check_options(l: RawState, idx: c_int, entry: Entry) -> Options {
    let mut options = Options::default();
    // SAFETY: raw iteration of a table nobody changes meanwhile (no Lua code runs but
    // `lua_pushfstring`'s allocations, which change no table); raising is allowed.
    unsafe {
        ffi::luaL_checkstack(l, 6, c"no room for options".as_ptr());
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, idx) != 0 {
            let key = ffi::lua_gettop(l) - 1;
            let value = key + 1;
            if entry == Entry::New
                && ffi::lua_type(l, key) == ffi::LUA_TNUMBER
                && ffi::lua_tonumber(l, key) == 1.0
            {
                ffi::lua_settop(l, key);
                continue;
            }
            let name = option_name(l, idx, key);
            match name {
                b"name" => {
                    let Some(text) = string_at(l, value) else {
                        type_error(l, idx, c"name", c"a string", value);
                    };
                    match ThreadName::new(text) {
                        Some(n) => options.extra.name = Some(n),
                        None => option_error(l, idx, c"name must not hold a zero byte"),
                    }
                }
                b"detached" => {
                    options.extra.detached = Some(check_boolean(l, idx, c"detached", value))
                }
                b"joinable" => {
                    options.extra.joinable = Some(check_boolean(l, idx, c"joinable", value))
                }
                b"paths" => options.no_paths = !check_boolean(l, idx, c"paths", value),
                b"stack_size" => {
                    let n = check_bytes(l, idx, c"stack_size", value);
                    if !(MIN_STACK..=MAX_STACK).contains(&n) {
                        let msg = ffi::lua_pushfstring(
                            l,
                            c"stack_size must be between %d and %d bytes".as_ptr(),
                            MIN_STACK as c_int,
                            MAX_STACK as c_int,
                        );
                        option_error(l, idx, CStr::from_ptr(msg));
                    }
                    options.extra.stack_size = Some(n);
                }
                b"memory_limit" => {
                    if cfg!(feature = "luajit") {
                        option_error(l, idx, c"memory_limit is not supported on LuaJIT");
                    }
                    let n = check_bytes(l, idx, c"memory_limit", value);
                    if n == 0 {
                        option_error(l, idx, c"memory_limit must be a positive number of bytes");
                    }
                    options.memory_limit = Some(n);
                }
                b"preload" => {
                    check_preload(l, idx, value);
                    options.preload = true;
                }
                _ => unknown_option(l, idx, key),
            }
            ffi::lua_settop(l, key);
        }
    }
    options
}

/// The name of the option whose key is at `key` (of the options table at `idx`), or
/// the argument error for a key that is not a string.
///
/// # Safety
/// As for [`check_options`]; the name lives while the key is on the stack.
pub(crate) unsafe fn option_name<'a>(l: RawState, idx: c_int, key: c_int) -> &'a [u8] {
    // SAFETY: see the function's contract.
    unsafe {
        match string_at(l, key) {
            Some(name) => name,
            None => {
                let msg = ffi::lua_pushfstring(
                    l,
                    c"option names are strings, got %s".as_ptr(),
                    ffi::luaL_typename(l, key),
                );
                option_error(l, idx, CStr::from_ptr(msg))
            }
        }
    }
}

/// Raises `bad argument #idx to '<f>' (unknown option '<name>')` for the string key at
/// `key`.
///
/// # Safety
/// As for [`check_options`].
pub(crate) unsafe fn unknown_option(l: RawState, idx: c_int, key: c_int) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        let msg = ffi::lua_pushfstring(
            l,
            c"unknown option '%s'".as_ptr(),
            ffi::lua_tolstring(l, key, std::ptr::null_mut()),
        );
        option_error(l, idx, CStr::from_ptr(msg))
    }
}

/// Raises `bad argument #idx to '<f>' (option '<option>': <what> expected, got <type>)`.
///
/// # Safety
/// As for [`check_options`].
pub(crate) unsafe fn type_error(
    l: RawState,
    idx: c_int,
    option: &CStr,
    what: &CStr,
    value: c_int,
) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        let msg = ffi::lua_pushfstring(
            l,
            c"option '%s': %s expected, got %s".as_ptr(),
            option.as_ptr(),
            what.as_ptr(),
            ffi::luaL_typename(l, value),
        );
        option_error(l, idx, CStr::from_ptr(msg))
    }
}

/// # Safety
/// As for [`check_options`].
pub(crate) unsafe fn check_boolean(l: RawState, idx: c_int, option: &CStr, value: c_int) -> bool {
    // SAFETY: see the function's contract.
    unsafe {
        if ffi::lua_type(l, value) != ffi::LUA_TBOOLEAN {
            type_error(l, idx, option, c"a boolean", value);
        }
        ffi::lua_toboolean(l, value) != 0
    }
}

/// A whole number of bytes.
///
/// # Safety
/// As for [`check_options`].
pub(crate) unsafe fn check_bytes(l: RawState, idx: c_int, option: &CStr, value: c_int) -> usize {
    // SAFETY: see the function's contract.
    unsafe {
        if ffi::lua_type(l, value) != ffi::LUA_TNUMBER {
            type_error(l, idx, option, c"a number of bytes", value);
        }
        let n = ffi::lua_tonumber(l, value);
        if !(n >= 0.0 && n.fract() == 0.0 && n < 9.0e15) {
            let msg = ffi::lua_pushfstring(
                l,
                c"option '%s': a whole number of bytes expected".as_ptr(),
                option.as_ptr(),
            );
            option_error(l, idx, CStr::from_ptr(msg));
        }
        n as usize
    }
}

/// The `preload` option: a table of module name → function.
///
/// # Safety
/// As for [`check_options`].
unsafe fn check_preload(l: RawState, idx: c_int, value: c_int) {
    // SAFETY: see the function's contract; raw iteration.
    unsafe {
        if ffi::lua_type(l, value) != ffi::LUA_TTABLE {
            type_error(l, idx, c"preload", c"a table", value);
        }
        ffi::lua_pushnil(l);
        while ffi::lua_next(l, value) != 0 {
            if ffi::lua_type(l, -2) != ffi::LUA_TSTRING
                || ffi::lua_type(l, -1) != ffi::LUA_TFUNCTION
            {
                let msg = ffi::lua_pushfstring(
                    l,
                    c"option 'preload': module names (strings) to functions expected, got %s to %s"
                        .as_ptr(),
                    ffi::luaL_typename(l, -2),
                    ffi::luaL_typename(l, -1),
                );
                option_error(l, idx, CStr::from_ptr(msg));
            }
            ffi::lua_settop(l, -2);
        }
    }
}

/// Pushes the calling state's `package.path` and `package.cpath` (nil where there is
/// none), read raw from `package.loaded.package`.
///
/// # Safety
/// Called from a C function Lua called, owning nothing (may raise: allocation).
pub(crate) unsafe fn push_paths(l: RawState) {
    // SAFETY: see the function's contract; raw reads only.
    unsafe {
        ffi::luaL_checkstack(l, 4, c"no room for paths".as_ptr());
        raw_field(l, ffi::LUA_REGISTRYINDEX, c"_LOADED");
        let loaded = ffi::lua_gettop(l);
        raw_field(l, loaded, c"package");
        ffi::lua_replace(l, loaded);
        let package = loaded;
        for field in [c"path", c"cpath"] {
            if raw_field(l, package, field) != ffi::LUA_TSTRING {
                ffi::lua_settop(l, -2);
                ffi::lua_pushnil(l);
            }
        }
        ffi::lua_remove(l, package);
    }
}

/// Pushes what the options put above the values (the paths, the preload table) and
/// returns the setup for `create`.
///
/// # Safety
/// As for [`check_options`]; `opts` is the index of the options table (when there is
/// one), the values are `first..=last` and nothing is above them.
unsafe fn setup(
    l: RawState,
    options: Options,
    entry: Entry,
    opts: Option<c_int>,
    code: Code,
    first: c_int,
    last: c_int,
) -> Setup {
    // SAFETY: see the function's contract.
    unsafe {
        let paths = (!options.no_paths).then(|| {
            push_paths(l);
            last + 1
        });
        let preload = match (options.preload, opts) {
            (true, Some(opts)) => {
                raw_field(l, opts, c"preload");
                Some(ffi::lua_gettop(l))
            }
            _ => None,
        };
        Setup {
            code,
            first,
            last,
            rules: Rules::VALUES,
            memory_limit: options.memory_limit,
            paths,
            preload,
            extra: Some(options.extra),
            code_moved: entry == Entry::New,
        }
    }
}

/// `new(code, ...)` or `new{code, options...}`.
///
/// # Safety
/// Called from a C function Lua called.
unsafe fn new(l: RawState, module: Module) -> c_int {
    // SAFETY: arguments are checked before anything is owned; `create` keeps its
    // contract with the stack laid out as the setup says.
    unsafe {
        if ffi::lua_type(l, 1) != ffi::LUA_TTABLE {
            return api::new(l, module);
        }
        let options = check_options(l, 1, Entry::New);
        // The code goes to index 2, before the values: a function is copied with them.
        ffi::luaL_checkstack(l, 8, c"no room for new".as_ptr());
        ffi::lua_rawgeti(l, 1, 1);
        let code = match ffi::lua_type(l, -1) {
            ffi::LUA_TFUNCTION => Code::Function,
            ffi::LUA_TSTRING | ffi::LUA_TNUMBER => Code::Source(2),
            _ => {
                let msg = ffi::lua_pushfstring(
                    l,
                    c"code (a string or a function) expected at [1], got %s".as_ptr(),
                    ffi::luaL_typename(l, -1),
                );
                arg_error(l, 1, CStr::from_ptr(msg));
            }
        };
        ffi::lua_insert(l, 2);
        let last = ffi::lua_gettop(l);
        let first = match code {
            Code::Function => 2,
            Code::Source(_) => 3,
        };
        let setup = setup(l, options, Entry::New, Some(1), code, first, last);
        create(l, module, setup)
    }
}

/// `spawn([options,] fn, ...)`: `new` and `start` in one call.
///
/// # Safety
/// Called from a C function Lua called.
unsafe fn spawn(l: RawState, module: Module) -> c_int {
    // SAFETY: as for `new`; the object `create` pushed is started once it returned.
    unsafe {
        let opts = (ffi::lua_type(l, 1) == ffi::LUA_TTABLE).then_some(1);
        let first = if opts.is_some() { 2 } else { 1 };
        if ffi::lua_type(l, first) != ffi::LUA_TFUNCTION {
            let msg = ffi::lua_pushfstring(
                l,
                c"function expected, got %s".as_ptr(),
                ffi::luaL_typename(l, first),
            );
            arg_error(l, first, CStr::from_ptr(msg));
        }
        let options = match opts {
            Some(idx) => check_options(l, idx, Entry::Spawn),
            None => Options::default(),
        };
        let last = ffi::lua_gettop(l);
        let setup = setup(l, options, Entry::Spawn, opts, Code::Function, first, last);
        create(l, module, setup);
        let object = ffi::lua_gettop(l);
        let slot = thread_slot(l, object);
        if slot.is_null() || (*slot).is_null() {
            api::raise(
                l,
                api::Raise::Static(c"llthreads: spawn's thread object was changed by Lua code"),
            );
        }
        let thread = *slot;
        let outcome = guarded(l, || {
            let (detached, joinable) = (*thread).default_modes();
            match (*thread).start(detached, joinable) {
                Ok(()) => None,
                Err(StartError::AlreadyStarted) => Some(Text::new("Thread already started.")),
                Err(StartError::Os(e)) => Some(api::os_error_text(&e)),
            }
        });
        match outcome {
            None => 1,
            Some(text) => fail(l, text.as_bytes()),
        }
    }
}
