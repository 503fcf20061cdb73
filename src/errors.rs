//! Error values as the library reports them: the message handler a chunk runs under,
//! and the one way to turn an error object into text for another state.

use std::ffi::c_int;

use mlua::ffi;

use crate::raw::{protected, push_bytes, string_at, RawState};

/// The message handler the chunk runs under: appends a traceback to string errors (and
/// to numbers, as text) and leaves other error values as they are, for
/// [`describe_error`] to turn into text once the chunk is done.
///
/// # Safety
/// Called by Lua as a message handler, with the error object at index 1.
pub unsafe extern "C-unwind" fn traceback(l: RawState) -> c_int {
    // SAFETY: Lua calls this inside the failing `lua_pcall`, so a raise (out of memory)
    // turns into LUA_ERRERR there; this frame owns nothing.
    unsafe {
        let kind = ffi::lua_type(l, 1);
        if kind == ffi::LUA_TSTRING || kind == ffi::LUA_TNUMBER {
            let msg = ffi::lua_tolstring(l, 1, std::ptr::null_mut());
            ffi::luaL_traceback(l, l, msg, 1);
        } else {
            ffi::lua_settop(l, 1);
        }
    }
    1
}

/// What the logger and `join` show for an error value that has no text.
pub const NO_MESSAGE: &std::ffi::CStr = c"(no error message)";

/// Turns the error object on top of `l`, left by a chunk that failed, into the text
/// the logger and `join` show, in the state where it was raised:
/// - a string stays as it is, a number becomes its text;
/// - on 5.2+, a value with a `__tostring` metamethod becomes what that returns, or
///   the error it raises, when that is a string or a number, else nil (no text); nil
///   stays nil, and any other value becomes [`NO_MESSAGE`], as the C original's
///   message handler makes them;
/// - on 5.1 and LuaJIT other values stay as they are.
///
/// The metamethod runs inside a protected call; when even that fails (out of memory),
/// the error object is replaced by the error raised doing it.
///
/// # Safety
/// `l` is used by this thread only, in a frame owning nothing, with the error object
/// on top and two free slots.
pub unsafe fn describe_error(l: RawState) {
    let mut body = |l: RawState| -> c_int {
        // SAFETY: protected on `l`; the error object is argument 1.
        unsafe {
            match ffi::lua_type(l, 1) {
                ffi::LUA_TSTRING | ffi::LUA_TNIL => {}
                ffi::LUA_TNUMBER => {
                    ffi::lua_tolstring(l, 1, std::ptr::null_mut());
                }
                #[cfg(not(any(feature = "lua51", feature = "luajit")))]
                _ => {
                    if ffi::luaL_getmetafield(l, 1, c"__tostring".as_ptr()) != 0 {
                        ffi::lua_pushvalue(l, 1);
                        // The result, or the error the metamethod raised: either is
                        // taken when it is text; else the error has none (nil).
                        ffi::lua_pcall(l, 1, 1, 0);
                        match ffi::lua_type(l, -1) {
                            ffi::LUA_TSTRING | ffi::LUA_TNUMBER => {
                                ffi::lua_tolstring(l, -1, std::ptr::null_mut());
                            }
                            _ => {
                                ffi::lua_settop(l, 1);
                                ffi::lua_pushnil(l);
                            }
                        }
                    } else {
                        ffi::lua_pushstring(l, NO_MESSAGE.as_ptr());
                    }
                    ffi::lua_replace(l, 1);
                }
                #[cfg(any(feature = "lua51", feature = "luajit"))]
                _ => {}
            }
        }
        1
    };
    // SAFETY: see the function's contract; the body owns nothing and does not panic.
    // Either way one value replaces the error object.
    unsafe { protected(l, 1, 1, &mut body) };
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
            // What is left without text after `describe_error` (nil; on 5.1 and
            // LuaJIT any value but a string) reads as it does in the C original's
            // `join`, which formats a missing string as Lua does: "(null)".
            None => {
                ffi::lua_pushstring(to, c"(null)".as_ptr());
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
