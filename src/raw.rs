//! Raw FFI helpers: the one place that knows how to run raising Lua API calls from Rust.
//!
//! A Lua error is a `longjmp` (a C++-style exception on LuaJIT). Rust frames it crosses
//! must own nothing that needs `Drop`, and it must never escape into a frame of another
//! Lua state. Everything in this crate that can raise while Rust owns resources goes
//! through [`protected`], which runs a closure inside `lua_pcall` of a C trampoline:
//! the error stops at that `lua_pcall` and comes back as a status code.

use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr};

use mlua::ffi;

pub use ffi::lua_State;

/// A raw Lua state pointer. Every function taking one requires it to be a valid,
/// open state that the calling thread may use right now.
pub type RawState = *mut lua_State;

/// The closure type run by [`protected`]; a fat pointer, so it travels behind a thin one.
type Body<'a> = &'a mut dyn FnMut(RawState) -> c_int;

/// The call that [`protected`] has armed on this thread and the trampoline has not
/// taken yet.
#[derive(Clone, Copy)]
struct Armed {
    /// The state (coroutine) `protected` runs the body on.
    state: RawState,
    /// The body, also passed as argument 1: both must agree.
    body: *mut c_void,
    /// The function running when `protected` was called (null when none), which must
    /// be the trampoline's caller.
    caller: *const c_void,
}

thread_local! {
    // Read and written only in ordinary context (never from a signal handler).
    static ARMED: Cell<Option<Armed>> = const { Cell::new(None) };
}

/// The C function that `lua_pcall` calls on behalf of [`protected`].
///
/// Lua code can reach it: it is on the call stack of every chunk
/// (`debug.getinfo(level, "f")`) and, on 5.1 and LuaJIT, in the registry. So it trusts
/// nothing it is given. It runs a body only when [`protected`] armed one on this
/// thread, it runs on the state (coroutine) `protected` was given, argument 1 is that
/// body, and its caller is the function that called `protected`; then it disarms, so each body runs at most once. A call from Lua,
/// even from a hook that copied argument 1 out of a legitimate call
/// (`debug.getlocal`), has another caller (or finds nothing armed) and gets an error.
///
/// # Safety
/// Called by Lua with a valid state.
unsafe extern "C-unwind" fn trampoline(l: RawState) -> c_int {
    let armed = ARMED.with(Cell::get);
    // SAFETY: reading the argument and the caller neither allocates nor raises; Lua
    // gives a C function LUA_MINSTACK free slots for `running_function`'s push.
    let legitimate = armed.is_some_and(|armed| unsafe {
        l == armed.state
            && ffi::lua_type(l, 1) == ffi::LUA_TLIGHTUSERDATA
            && ffi::lua_touserdata(l, 1) == armed.body
            && running_function(l, 1) == armed.caller
    });
    if !legitimate {
        // SAFETY: this frame owns nothing; the raise goes to whoever called us.
        unsafe {
            ffi::lua_pushstring(
                l,
                c"llthreads: internal function, not callable from Lua".as_ptr(),
            );
            raise_top(l)
        }
    }
    ARMED.with(|a| a.set(None));
    // SAFETY: (1) argument 1 is the armed body, a pointer to `protected`'s own `Body`
    // local, which outlives this call: `protected` armed it just before the
    // `lua_pcall` that is running us and disarms after it; (2) removing index 1
    // leaves the caller's arguments at 1..=n as documented; (3) bodies are written
    // not to panic, so no Rust unwind leaves this frame.
    unsafe {
        let body = ffi::lua_touserdata(l, 1) as *mut Body;
        ffi::lua_remove(l, 1);
        (*body)(l)
    }
}

/// Identifies the function running at `level` of `l`'s call stack (0: the current
/// one), or null when there is no such level.
///
/// # Safety
/// `l` is valid with one free stack slot. Never raises: `lua_getinfo` with "f" only
/// pushes a value that already exists.
unsafe fn running_function(l: RawState, level: c_int) -> *const c_void {
    // SAFETY: see the function's contract; the pushed function is popped at once.
    unsafe {
        let mut ar: ffi::lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(l, level, &mut ar) == 0 {
            return std::ptr::null();
        }
        ffi::lua_getinfo(l, c"f".as_ptr(), &mut ar);
        let f = ffi::lua_topointer(l, -1);
        ffi::lua_settop(l, -2);
        f
    }
}

/// Registry key of the cached trampoline closure on Lua 5.1 / LuaJIT (per library copy).
#[cfg(any(feature = "lua51", feature = "luajit"))]
static TRAMPOLINE_KEY: u8 = 0;

/// Pushes the trampoline without raising. Returns `false` with an error object pushed
/// instead when that was impossible (out of memory).
///
/// # Safety
/// `l` is valid and has two free stack slots.
unsafe fn push_trampoline(l: RawState) -> bool {
    #[cfg(not(any(feature = "lua51", feature = "luajit")))]
    {
        // SAFETY: on 5.2+ a C function without upvalues is a light C function: pushing it
        // allocates nothing and cannot raise. The caller guarantees the stack slot.
        unsafe { ffi::lua_pushcfunction(l, trampoline) };
        true
    }
    #[cfg(any(feature = "lua51", feature = "luajit"))]
    {
        // On 5.1 every pushed C function is a new closure (an allocation that can raise),
        // so the closure is made once per state under `lua_cpcall` and cached.
        unsafe extern "C-unwind" fn install(l: RawState) -> c_int {
            // SAFETY: runs under `lua_cpcall`, so a raise stops there; nothing owned here.
            unsafe {
                ffi::lua_pushlightuserdata(l, key());
                ffi::lua_pushcfunction(l, trampoline);
                ffi::lua_rawset(l, ffi::LUA_REGISTRYINDEX);
            }
            0
        }
        fn key() -> *mut c_void {
            &TRAMPOLINE_KEY as *const u8 as *mut c_void
        }
        // SAFETY: a raw get with a light userdata key neither allocates nor calls
        // metamethods; `lua_cpcall` catches any error of `install` and leaves only the
        // (preallocated) error message on the stack. The caller guarantees two slots.
        // Lua code can reach the registry (`debug.getregistry`) and put anything under
        // our key: only the trampoline itself is taken from there, else it is made anew.
        fn cached(l: RawState) -> bool {
            // SAFETY: reads the value on top; `lua_tocfunction` allocates nothing.
            let f = unsafe { ffi::lua_tocfunction(l, -1) };
            let ours: ffi::lua_CFunction = trampoline;
            f.is_some_and(|f| std::ptr::fn_addr_eq(f, ours))
        }
        // SAFETY: a raw get with a light userdata key neither allocates nor calls
        // metamethods; `lua_cpcall` catches any error of `install` and leaves only the
        // (preallocated) error message on the stack. The caller guarantees two slots.
        unsafe {
            ffi::lua_pushlightuserdata(l, key());
            ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
            if cached(l) {
                return true;
            }
            ffi::lua_settop(l, -2);
            if ffi::lua_cpcall(l, install, std::ptr::null_mut()) != 0 {
                return false;
            }
            ffi::lua_pushlightuserdata(l, key());
            ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
            true
        }
    }
}

/// Runs `body` inside `lua_pcall` on `l`, with the top `nargs` values as its arguments
/// (at indices `1..=nargs` of the new frame). Returns the `lua_pcall` status; on
/// success `nresults` values (or all, with `LUA_MULTRET`) replace the arguments, on
/// failure the error object does.
///
/// # Safety
/// 1. `l` is a valid state that this thread may use, with `nargs` values on top and at
///    least two more free stack slots.
/// 2. `body` does not panic (no Rust unwind may cross Lua's C frames: a panic in it
///    aborts the process, see `barrier.rs`), owns nothing
///    needing `Drop` across a raising call, and touches other Lua states only with
///    calls that cannot raise.
pub unsafe fn protected(
    l: RawState,
    nargs: c_int,
    nresults: c_int,
    body: &mut dyn FnMut(RawState) -> c_int,
) -> c_int {
    let mut body: Body = body;
    let armed = Armed {
        state: l,
        body: &mut body as *mut Body as *mut c_void,
        // SAFETY: `l` is valid with free slots (reason 1).
        caller: unsafe { running_function(l, 0) },
    };
    // A hook running between arming and the trampoline's call may call `protected`
    // itself; the outer call is re-armed when that inner one is done.
    let outer = ARMED.with(|a| a.replace(Some(armed)));
    // SAFETY: the stack slots are guaranteed by the caller (reason 1); none of these
    // calls raises: `push_trampoline` never does, `lua_insert` and
    // `lua_pushlightuserdata` do not allocate, and `lua_pcall` catches every error.
    // `body` outlives the `lua_pcall` that uses the pointer to it.
    let status = unsafe {
        if !push_trampoline(l) {
            ffi::lua_insert(l, -(nargs + 1));
            ffi::lua_settop(l, -(nargs + 1));
            ffi::LUA_ERRMEM
        } else {
            ffi::lua_insert(l, -(nargs + 1));
            ffi::lua_pushlightuserdata(l, armed.body);
            ffi::lua_insert(l, -(nargs + 1));
            // A panic in `body` could only unwind through Lua's frames: it aborts.
            crate::barrier::uncatchable(|| ffi::lua_pcall(l, nargs + 1, nresults, 0))
        }
    };
    // Disarmed even when the trampoline never ran (a hook raised on its call).
    ARMED.with(|a| a.set(outer));
    status
}

/// Pushes `t[name]`, read raw, where `t` is the value at the absolute index `idx`, or
/// pushes nil when that value is not a table. Pushing the key may run a finalizer,
/// and Lua code there can replace any stack slot of a C frame (`debug.setlocal`): the
/// slot is checked after the push, just before the raw get, which never runs Lua code.
///
/// # Safety
/// `l` is valid with one free stack slot, in a context where a raise (out of memory
/// while pushing the key) is allowed; `idx` is a valid absolute index or a pseudo-index.
pub unsafe fn raw_field(l: RawState, idx: c_int, name: &std::ffi::CStr) -> c_int {
    // SAFETY: see the function's contract; the raw get is only made on a table.
    unsafe {
        ffi::lua_pushstring(l, name.as_ptr());
        if ffi::lua_type(l, idx) == ffi::LUA_TTABLE {
            ffi::lua_rawget(l, idx);
        } else {
            ffi::lua_settop(l, -2);
            ffi::lua_pushnil(l);
        }
        ffi::lua_type(l, -1)
    }
}

/// Pushes `registry[key]` where `key` is a light userdata. Returns the value's type.
///
/// # Safety
/// `l` is valid with one free stack slot. Never raises (raw get, light userdata key).
pub unsafe fn registry_get(l: RawState, key: *const u8) -> c_int {
    // SAFETY: see the function's contract; a raw get does not allocate.
    unsafe {
        ffi::lua_pushlightuserdata(l, key as *mut c_void);
        ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
        ffi::lua_type(l, -1)
    }
}

/// Pops the top value into `registry[key]`.
///
/// # Safety
/// `l` is valid, with one free slot, in a context where a raise (out of memory while
/// growing the registry) is allowed: no Rust frame with `Drop` values in between.
pub unsafe fn registry_set(l: RawState, key: *const u8) {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::lua_pushlightuserdata(l, key as *mut c_void);
        ffi::lua_insert(l, -2);
        ffi::lua_rawset(l, ffi::LUA_REGISTRYINDEX);
    }
}

/// The block of the full userdata at `idx` when it is one of this library copy's
/// objects of one kind, else null. Such a block is `size` bytes, starts with the
/// address of `key` (a `#[repr(C)]` tag field), and has `registry[key]` as its
/// metatable. The tag is what counts: with `debug`, Lua code can give the metatable to
/// another library's userdata, whose memory must never be read as ours.
///
/// # Safety
/// Valid state with two free slots; never raises.
pub unsafe fn tagged_block(l: RawState, idx: c_int, size: usize, key: *const u8) -> *mut c_void {
    // SAFETY: see the function's contract. The size check comes before the tag is
    // read, so the read stays inside the block whatever library made it.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA
            || ffi::lua_rawlen(l, idx) as usize != size
            || ffi::lua_getmetatable(l, idx) == 0
        {
            return std::ptr::null_mut();
        }
        registry_get(l, key);
        let ours = ffi::lua_rawequal(l, -1, -2) != 0;
        ffi::lua_settop(l, -3);
        let block = ffi::lua_touserdata(l, idx);
        if ours && std::ptr::eq(*(block as *const *const u8), key) {
            block
        } else {
            std::ptr::null_mut()
        }
    }
}

/// Pushes a byte string.
///
/// # Safety
/// As for `lua_pushlstring`: may raise (allocation).
pub unsafe fn push_bytes(l: RawState, s: &[u8]) {
    // SAFETY: the pointer and length describe `s`; Lua copies the bytes.
    unsafe { ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len()) };
}

/// Returns the string at `idx` as bytes, or `None` when it is not a string.
/// Numbers are deliberately not converted (that would allocate and could raise).
///
/// # Safety
/// `l` is valid; the slice lives while the value stays on the stack.
pub unsafe fn string_at<'a>(l: RawState, idx: c_int) -> Option<&'a [u8]> {
    // SAFETY: for a string value `lua_tolstring` returns its interned bytes without
    // allocating; they stay valid while the value is on the stack.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TSTRING {
            return None;
        }
        let mut len = 0usize;
        let ptr = ffi::lua_tolstring(l, idx, &mut len);
        Some(std::slice::from_raw_parts(ptr.cast(), len))
    }
}

/// Raises an argument error (`bad argument #n to 'f' (msg)`).
///
/// # Safety
/// Called from a C function that Lua called, in a frame owning nothing with `Drop`.
pub unsafe fn arg_error(l: RawState, n: c_int, msg: &CStr) -> ! {
    // SAFETY: see the function's contract; `luaL_argerror` never returns.
    unsafe {
        ffi::luaL_argerror(l, n, msg.as_ptr());
    }
    unreachable_after_raise()
}

/// Raises the value on top of the stack.
///
/// # Safety
/// As for [`arg_error`].
pub unsafe fn raise_top(l: RawState) -> ! {
    // SAFETY: see the function's contract.
    unsafe { ffi::lua_error(l) }
}

/// `luaL_argerror` is declared as returning; it never does.
fn unreachable_after_raise() -> ! {
    // Not reachable: Lua's error functions do not return. Abort rather than unwind.
    std::process::abort()
}

#[cfg(feature = "luajit")]
extern "C-unwind" {
    // LuaJIT exports these two functions of the 5.2 API; mlua declares them for 5.2+
    // only.
    fn lua_upvalueid(l: RawState, fidx: c_int, n: c_int) -> *mut c_void;
    fn lua_upvaluejoin(l: RawState, f1: c_int, n1: c_int, f2: c_int, n2: c_int);
}

/// The identity of upvalue `n` of the function at `fidx`: two closures that share an
/// upvalue give the same pointer. Not on Lua 5.1, which has no such call.
///
/// # Safety
/// `l` is valid; `fidx` holds a Lua function with at least `n` upvalues. Never raises.
#[cfg(not(feature = "lua51"))]
pub unsafe fn upvalue_id(l: RawState, fidx: c_int, n: c_int) -> *const c_void {
    // SAFETY: see the function's contract.
    unsafe {
        #[cfg(feature = "luajit")]
        return lua_upvalueid(l, fidx, n);
        #[cfg(not(feature = "luajit"))]
        return ffi::lua_upvalueid(l, fidx, n);
    }
}

/// Makes upvalue `n1` of the Lua function at `f1` refer to upvalue `n2` of the Lua
/// function at `f2`.
///
/// # Safety
/// `l` is valid; both indices hold Lua (not C) functions with that many upvalues
/// (unchecked by Lua: anything else corrupts memory). Never raises.
#[cfg(not(feature = "lua51"))]
pub unsafe fn upvalue_join(l: RawState, f1: c_int, n1: c_int, f2: c_int, n2: c_int) {
    // SAFETY: see the function's contract.
    unsafe {
        #[cfg(feature = "luajit")]
        lua_upvaluejoin(l, f1, n1, f2, n2);
        #[cfg(not(feature = "luajit"))]
        ffi::lua_upvaluejoin(l, f1, n1, f2, n2);
    }
}

/// Pushes `package` of `l` (its table in `package.loaded`, read raw: no metamethod
/// runs), or raises when there is none.
///
/// # Safety
/// Inside a protected call on `l` (it may raise), with three free slots.
pub unsafe fn push_package(l: RawState) {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::lua_pushstring(l, c"_LOADED".as_ptr());
        ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_pushstring(l, c"package".as_ptr());
            ffi::lua_rawget(l, -2);
            if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                ffi::lua_replace(l, -2);
                return;
            }
        }
        ffi::lua_pushstring(l, c"llthreads: the state has no package library".as_ptr());
        ffi::lua_error(l);
    }
}
