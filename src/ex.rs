//! `llthreads.ex`: the pure-Lua convenience layer over `new`, shipped inside the
//! library so that no separate Lua file has to be installed.

use std::ffi::{c_int, CStr};

use mlua::ffi;

use crate::raw::{raise_top, RawState};

const SOURCE: &str = include_str!("ex.lua");

/// Runs `ex.lua` with the base module's name and returns its table.
///
/// # Safety
/// Called from a `luaopen_*` function: raising allowed, nothing owned.
pub unsafe fn open(l: RawState, base: &CStr) -> c_int {
    // SAFETY: see the function's contract; errors (a failing `require` of the base
    // module) propagate to the caller's `require`.
    unsafe {
        if ffi::luaL_loadbuffer(
            l,
            SOURCE.as_ptr().cast(),
            SOURCE.len(),
            c"=llthreads.ex".as_ptr(),
        ) != ffi::LUA_OK
        {
            raise_top(l);
        }
        ffi::lua_pushstring(l, base.as_ptr());
        ffi::lua_call(l, 1, 1);
    }
    1
}
