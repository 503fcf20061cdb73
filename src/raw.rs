//! Raw FFI helpers: the one place that knows how to run raising Lua API calls from Rust.
//!
//! A Lua error is a `longjmp` (a C++-style exception on LuaJIT). Rust frames it crosses
//! must own nothing that needs `Drop`, and it must never escape into a frame of another
//! Lua state. Everything in this crate that can raise while Rust owns resources goes
//! through [`protected`], which runs a closure inside `lua_pcall` of a C trampoline:
//! the error stops at that `lua_pcall` and comes back as a status code.

use std::ffi::{c_int, c_void, CStr};

use mlua::ffi;

pub use ffi::lua_State;

/// A raw Lua state pointer. Every function taking one requires it to be a valid,
/// open state that the calling thread may use right now.
pub type RawState = *mut lua_State;

/// The closure type run by [`protected`]; a fat pointer, so it travels behind a thin one.
type Body<'a> = &'a mut dyn FnMut(RawState) -> c_int;

/// The C function that `lua_pcall` calls on behalf of [`protected`].
///
/// # Safety
/// Lua calls it with a light userdata at index 1 pointing to a live `Body`.
unsafe extern "C-unwind" fn trampoline(l: RawState) -> c_int {
    // SAFETY: (1) `protected` pushed a pointer to its own `Body` local as argument 1 and
    // that local outlives this call, which happens inside `protected`'s `lua_pcall`;
    // (2) removing index 1 leaves the caller's arguments at 1..=n as documented;
    // (3) bodies are written not to panic, so no Rust unwind leaves this frame.
    unsafe {
        let body = ffi::lua_touserdata(l, 1) as *mut Body;
        ffi::lua_remove(l, 1);
        (*body)(l)
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
        unsafe {
            ffi::lua_pushlightuserdata(l, key());
            ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX);
            if ffi::lua_type(l, -1) == ffi::LUA_TFUNCTION {
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
    // SAFETY: the stack slots are guaranteed by the caller (reason 1); none of these
    // calls raises: `push_trampoline` never does, `lua_insert` and
    // `lua_pushlightuserdata` do not allocate, and `lua_pcall` catches every error.
    // `body` outlives the `lua_pcall` that uses the pointer to it.
    unsafe {
        if !push_trampoline(l) {
            ffi::lua_insert(l, -(nargs + 1));
            ffi::lua_settop(l, -(nargs + 1));
            return ffi::LUA_ERRMEM;
        }
        ffi::lua_insert(l, -(nargs + 1));
        ffi::lua_pushlightuserdata(l, &mut body as *mut Body as *mut c_void);
        ffi::lua_insert(l, -(nargs + 1));
        // A panic in `body` could only unwind through Lua's frames: it aborts.
        crate::barrier::uncatchable(|| ffi::lua_pcall(l, nargs + 1, nresults, 0))
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
