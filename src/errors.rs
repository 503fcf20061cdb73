//! Error values as the library reports them: the message handler a chunk runs under,
//! and the one way to turn an error object into text for another state.

use std::ffi::c_int;

use mlua::ffi;

use crate::raw::{protected, push_bytes, string_at, RawState};

/// The message handler the chunk runs under: appends a traceback to string errors and
/// leaves other error values as they are.
///
/// # Safety
/// Called by Lua as a message handler, with the error object at index 1.
pub unsafe extern "C-unwind" fn traceback(l: RawState) -> c_int {
    // SAFETY: Lua calls this inside the failing `lua_pcall`, so a raise (out of memory)
    // turns into LUA_ERRERR there; this frame owns nothing.
    unsafe {
        if ffi::lua_type(l, 1) == ffi::LUA_TSTRING {
            let msg = ffi::lua_tolstring(l, 1, std::ptr::null_mut());
            ffi::luaL_traceback(l, l, msg, 1);
        } else {
            ffi::lua_settop(l, 1);
        }
    }
    1
}

/// Pushes the text of the error object on top of `from` onto `to`.
///
/// # Safety
/// Protected on `to`; `from` is only read.
unsafe fn push_error_text(from: RawState, to: RawState) {
    // SAFETY: see the function's contract.
    unsafe {
        match string_at(from, -1) {
            Some(msg) => push_bytes(to, msg),
            None => {
                let tname = ffi::lua_typename(from, ffi::lua_type(from, -1));
                ffi::lua_pushfstring(to, c"(error object is a %s value)".as_ptr(), tname);
            }
        }
    }
}

/// Pushes onto `to` the text `prefix .. text`, where `text` is that of the error
/// object on top of `from`, under a protected call on `to`. When even that fails (out
/// of memory), the resulting error object is pushed instead.
///
/// # Safety
/// `to` is valid with three free slots, in a frame owning nothing needing `Drop`;
/// `from` is used by no other thread and has an error object on top.
pub unsafe fn push_message(from: RawState, to: RawState, prefix: &[u8]) {
    let mut body = |to: RawState| -> c_int {
        // SAFETY: protected on `to`; `from` is only read.
        unsafe {
            push_bytes(to, prefix);
            push_error_text(from, to);
            ffi::lua_concat(to, 2);
        }
        1
    };
    // SAFETY: see the function's contract; either way one value ends up pushed.
    unsafe { protected(to, 0, 1, &mut body) };
}
