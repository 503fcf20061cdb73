//! Copying values from one Lua state to another, directly, with no Rust detour.
//!
//! The copier runs inside a protected call on the *target* state (writes there can
//! raise: allocation). It only reads the *source* state, with calls that cannot raise
//! provided the source stack has room: [`SOURCE_SLOTS`] free slots on entry, which the
//! caller guarantees, and two more per table level, which the copier takes with
//! [`reserve`] (never raising) only when it meets a table. So an error in one state
//! never escapes through the other's protected call, and a copy of flat values needs
//! no more room than the values themselves: as many can cross as the stacks hold.

use std::ffi::{c_int, c_void, CStr};

use mlua::ffi;

use crate::raw::{protected, RawState};

/// Deepest value nesting copied; counted per value, as the C original counts it:
/// a top-level value is at depth 1 and a table's keys and values one deeper.
pub const MAX_DEPTH: c_int = 30;

/// Free source stack slots the copier needs on entry: one, to look at a C function's
/// upvalue.
pub const SOURCE_SLOTS: c_int = 1;

/// Source slots a table level takes: the key and the value `lua_next` pushes.
const LEVEL_SLOTS: c_int = 2;

/// Why [`reserve`] could not make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortage {
    /// The stack would pass its size limit. (On 5.2+ `lua_checkstack` reports running
    /// out of memory the same way, and Lua's own `luaL_checkstack` calls both "stack
    /// overflow" too.)
    StackFull,
    /// Growing the stack ran out of memory (told apart on 5.1 and LuaJIT only).
    #[cfg_attr(not(any(feature = "lua51", feature = "luajit")), allow(dead_code))]
    OutOfMemory,
}

impl Shortage {
    /// The message for an error about it.
    pub fn message(self, what: &'static CStr) -> &'static CStr {
        match self {
            Shortage::StackFull => what,
            Shortage::OutOfMemory => c"not enough memory",
        }
    }
}

/// Makes `n` more slots free on `l`'s stack, without ever raising and without needing
/// any free slot first.
///
/// # Safety
/// `l` is a valid state that this thread may use, in a frame owning nothing that a
/// hook's raise could skip (a raise stops inside this call either way).
pub unsafe fn reserve(l: RawState, n: c_int) -> Result<(), Shortage> {
    #[cfg(not(any(feature = "lua51", feature = "luajit")))]
    {
        // SAFETY: on 5.2+ `lua_checkstack` grows the stack under its own protection
        // and reports failure instead of raising.
        match unsafe { ffi::lua_checkstack(l, n) } {
            0 => Err(Shortage::StackFull),
            _ => Ok(()),
        }
    }
    #[cfg(any(feature = "lua51", feature = "luajit"))]
    {
        /// What [`grow`] is asked, and what it answers.
        struct Grow {
            n: c_int,
            done: bool,
        }
        /// Grows the stack in a frame just above the caller's, so the room it makes
        /// covers `n` slots of the caller's frame too.
        unsafe extern "C-unwind" fn grow(l: RawState) -> c_int {
            // SAFETY: `lua_cpcall` passes the `Grow` of `reserve` (alive during the
            // call) as the only argument; a raise stops at that `lua_cpcall`.
            unsafe {
                let grow = ffi::lua_touserdata(l, 1) as *mut Grow;
                (*grow).done = ffi::lua_checkstack(l, (*grow).n) != 0;
            }
            0
        }
        // Here `lua_checkstack` raises when growing the stack runs out of memory. So
        // the stack grows first under `lua_cpcall`, which takes no free slot of the
        // caller's (what it pushes lies in the room Lua keeps past every stack's
        // end); then `lua_checkstack` in this frame finds the room already there and
        // only records it: it neither allocates nor raises.
        let mut ask = Grow { n, done: false };
        // SAFETY: `grow` follows the contract above; after a failure the error
        // object is the only value pushed, and popping it cannot raise.
        unsafe {
            match ffi::lua_cpcall(l, grow, &mut ask as *mut Grow as *mut c_void) {
                ffi::LUA_OK => {}
                status => {
                    ffi::lua_settop(l, -2);
                    return Err(match status {
                        ffi::LUA_ERRMEM => Shortage::OutOfMemory,
                        _ => Shortage::StackFull,
                    });
                }
            }
            if ask.done && ffi::lua_checkstack(l, n) != 0 {
                Ok(())
            } else {
                Err(Shortage::StackFull)
            }
        }
    }
}

/// Why a copy stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyError {
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
    /// The source stack had no room left to walk a table.
    NoRoom(Shortage),
    /// A value that cannot cross states, inside the top-level value at this source
    /// index (only when copying arguments; results get a placeholder string instead).
    Unsupported { index: c_int },
}

/// What to do with values that cannot be copied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// Stop with [`CopyError::Unsupported`] (arguments to `new`).
    Refuse,
    /// Put the string `"Un-supported value: <type>: <pointer>"` in its place (results).
    Describe,
}

/// One copy operation: the values `first..=last` of `from`, pushed onto `to` in order.
/// Tables met more than once become one table in the copy (cycles survive).
struct Copier {
    from: RawState,
    to: RawState,
    unsupported: Unsupported,
    /// Target index of the table mapping source table pointers to their copies.
    cache: c_int,
    has_cache: bool,
    /// Source index of the top-level value being copied, for error reports.
    top_level: c_int,
}

/// Copies `from[first..=last]` onto `to`, leaving exactly those values pushed on success.
///
/// # Safety
/// 1. Runs inside a protected call on `to` (it may raise there) with `to` valid.
/// 2. `from` is a valid state not used by any other thread now, with at least
///    [`SOURCE_SLOTS`] free stack slots: reads of `from` then never raise (tables
///    take their room with [`reserve`], which never raises).
/// 3. `first..=last` are valid absolute indices of `from`.
pub unsafe fn copy_values(
    from: RawState,
    to: RawState,
    first: c_int,
    last: c_int,
    unsupported: Unsupported,
) -> Result<c_int, CopyError> {
    let count = count(first, last);
    // SAFETY: raising on `to` is allowed (reason 1). The placeholder keeps the cache's
    // index fixed below the copied values; room for it and for the values is all this
    // needs (a table asks for its own room when it is met).
    unsafe {
        room_on_target(to, count + 1, c"stack overflow (too many values to copy)");
        ffi::lua_pushnil(to);
    }
    let mut copier = Copier {
        from,
        to,
        unsupported,
        // SAFETY: `to` is valid.
        cache: unsafe { ffi::lua_gettop(to) },
        has_cache: false,
        top_level: 0,
    };
    for idx in first..=last {
        copier.top_level = idx;
        // SAFETY: forwarded contract.
        unsafe { copier.value(idx, 1)? };
    }
    // SAFETY: the cache slot is below the copied values; removing it cannot raise.
    unsafe { ffi::lua_remove(to, copier.cache) };
    Ok(count)
}

/// Why [`transfer`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The copier refused a value; nothing is left pushed on the target.
    Copy(CopyError),
    /// The target raised (out of memory); its error object is on the target's top.
    Raised,
}

/// Copies `from[first..=last]` onto `to` inside a protected call on `to`: the one way
/// the library moves values between states (arguments at `new`, results at `join`).
/// Returns how many values were pushed.
///
/// # Safety
/// 1. `to` is valid, used by this thread only, with two free stack slots, in a frame
///    that owns nothing needing `Drop` across this call (errors stop inside it).
/// 2. `from` and `first..=last` as for [`copy_values`], including the reserved slots.
pub unsafe fn transfer(
    from: RawState,
    to: RawState,
    first: c_int,
    last: c_int,
    unsupported: Unsupported,
) -> Result<c_int, Failure> {
    let mut refused = None;
    let mut body = |to: RawState| -> c_int {
        // SAFETY: protected on `to` (contract reason 1); `from` is only read (reason 2).
        match unsafe { copy_values(from, to, first, last, unsupported) } {
            Ok(n) => n,
            Err(e) => {
                refused = Some(e);
                0
            }
        }
    };
    // SAFETY: the contract above is `protected`'s; the body owns nothing and does not
    // panic.
    let status = unsafe { protected(to, 0, ffi::LUA_MULTRET, &mut body) };
    match (status, refused) {
        (ffi::LUA_OK, None) => Ok(count(first, last)),
        (ffi::LUA_OK, Some(e)) => Err(Failure::Copy(e)),
        _ => Err(Failure::Raised),
    }
}

/// Makes `n` slots free on the target or raises `msg` there. (Not `luaL_checkstack`:
/// on 5.1 and LuaJIT mlua's version of it asks for LUA_MINSTACK more than it is told,
/// which would cost 20 values near the stack's limit.)
///
/// # Safety
/// Inside a protected call on `to`.
unsafe fn room_on_target(to: RawState, n: c_int, msg: &CStr) {
    // SAFETY: raising on `to` is allowed (the contract); the message is static.
    unsafe {
        if ffi::lua_checkstack(to, n) == 0 {
            ffi::lua_pushstring(to, msg.as_ptr());
            ffi::lua_error(to);
        }
    }
}

fn count(first: c_int, last: c_int) -> c_int {
    (last - first + 1).max(0)
}

impl Copier {
    /// Pushes a copy of `from[idx]` onto `to`. `depth` is this value's depth.
    ///
    /// # Safety
    /// The contract of [`copy_values`]; `idx` is an absolute index of `from`.
    unsafe fn value(&mut self, idx: c_int, depth: c_int) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::TooDeep);
        }
        let (from, to) = (self.from, self.to);
        // SAFETY: reads of `from` below do not allocate (strings are not converted,
        // numbers are read as numbers); pushes onto `to` may raise, which is allowed.
        unsafe {
            match ffi::lua_type(from, idx) {
                ffi::LUA_TNIL => ffi::lua_pushnil(to),
                ffi::LUA_TBOOLEAN => ffi::lua_pushboolean(to, ffi::lua_toboolean(from, idx)),
                ffi::LUA_TNUMBER => push_number(from, to, idx),
                ffi::LUA_TSTRING => {
                    let mut len = 0usize;
                    let ptr = ffi::lua_tolstring(from, idx, &mut len);
                    ffi::lua_pushlstring(to, ptr, len);
                }
                ffi::LUA_TLIGHTUSERDATA => {
                    ffi::lua_pushlightuserdata(to, ffi::lua_touserdata(from, idx))
                }
                ffi::LUA_TTABLE => self.table(idx, depth)?,
                ffi::LUA_TFUNCTION if plain_c_function(from, idx) => {
                    if let Some(f) = ffi::lua_tocfunction(from, idx) {
                        ffi::lua_pushcfunction(to, f);
                    }
                }
                _ => self.unsupported(idx)?,
            }
        }
        Ok(())
    }

    /// Pushes the copy of the table at `from[idx]`, reusing one made earlier in this copy.
    ///
    /// # Safety
    /// As for [`Copier::value`].
    unsafe fn table(&mut self, idx: c_int, depth: c_int) -> Result<(), CopyError> {
        let (from, to) = (self.from, self.to);
        // SAFETY: see `value`. `lua_next` over a table we do not modify, with keys it
        // returned, cannot raise; the source stack has room for the key and the value
        // it pushes, with `SOURCE_SLOTS` left above them for the nested values, as
        // `reserve` (which never raises) made sure.
        unsafe {
            let key = ffi::lua_topointer(from, idx) as *mut c_void;
            room_on_target(to, 4, c"stack overflow (copy too deep)");
            if !self.has_cache {
                ffi::lua_newtable(to);
                ffi::lua_replace(to, self.cache);
                self.has_cache = true;
            }
            ffi::lua_pushlightuserdata(to, key);
            ffi::lua_rawget(to, self.cache);
            if ffi::lua_type(to, -1) != ffi::LUA_TNIL {
                return Ok(());
            }
            ffi::lua_settop(to, -2);

            let narr = c_int::try_from(ffi::lua_rawlen(from, idx)).unwrap_or(0);
            ffi::lua_createtable(to, narr, 0);
            ffi::lua_pushlightuserdata(to, key);
            ffi::lua_pushvalue(to, -2);
            ffi::lua_rawset(to, self.cache);

            // A raise inside `reserve` (a hook on `from`, say) stops in its own
            // protected call and reads as no room; nothing is pushed on `from` then.
            reserve(from, LEVEL_SLOTS + SOURCE_SLOTS).map_err(CopyError::NoRoom)?;
            let base = ffi::lua_gettop(from);
            ffi::lua_pushnil(from);
            while ffi::lua_next(from, idx) != 0 {
                let result = self
                    .value(base + 1, depth + 1)
                    .and_then(|()| self.value(base + 2, depth + 1));
                if let Err(e) = result {
                    ffi::lua_settop(from, base);
                    return Err(e);
                }
                ffi::lua_rawset(to, -3);
                ffi::lua_settop(from, base + 1);
            }
        }
        Ok(())
    }

    /// Handles a value that cannot cross states.
    ///
    /// # Safety
    /// As for [`Copier::value`].
    unsafe fn unsupported(&mut self, idx: c_int) -> Result<(), CopyError> {
        match self.unsupported {
            Unsupported::Refuse => Err(CopyError::Unsupported {
                index: self.top_level,
            }),
            Unsupported::Describe => {
                // SAFETY: `lua_typename` returns a static string; `lua_topointer` only
                // reads; the push onto `to` may raise, which is allowed.
                unsafe {
                    let tname = ffi::lua_typename(self.from, ffi::lua_type(self.from, idx));
                    let ptr = ffi::lua_topointer(self.from, idx);
                    ffi::lua_pushfstring(
                        self.to,
                        c"Un-supported value: %s: %p".as_ptr(),
                        tname,
                        ptr,
                    );
                }
                Ok(())
            }
        }
    }
}

/// Pushes the number at `from[idx]` onto `to`, keeping integer and float apart on 5.3+.
///
/// # Safety
/// `from[idx]` is a number; pushing onto `to` is allowed to raise.
unsafe fn push_number(from: RawState, to: RawState, idx: c_int) {
    // SAFETY: see the function's contract; none of the reads allocate.
    unsafe {
        #[cfg(any(feature = "lua53", feature = "lua54"))]
        if ffi::lua_isinteger(from, idx) != 0 {
            ffi::lua_pushinteger(to, ffi::lua_tointeger(from, idx));
            return;
        }
        ffi::lua_pushnumber(to, ffi::lua_tonumber(from, idx));
    }
}

/// Whether the function at `from[idx]` is a C function that can be called from another
/// state: it has a C pointer and no upvalues (which would not travel with it).
///
/// # Safety
/// `from` is valid with one free stack slot; `idx` is absolute.
unsafe fn plain_c_function(from: RawState, idx: c_int) -> bool {
    // SAFETY: `lua_getupvalue` on a C function pushes the upvalue (no allocation: the
    // name is a static "") when there is one; it is popped at once.
    unsafe {
        if ffi::lua_iscfunction(from, idx) == 0 || ffi::lua_tocfunction(from, idx).is_none() {
            return false;
        }
        if !ffi::lua_getupvalue(from, idx, 1).is_null() {
            ffi::lua_settop(from, -2);
            return false;
        }
    }
    true
}
