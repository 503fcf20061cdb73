//! Copying values from one Lua state to another, directly, with no Rust detour.
//!
//! The copier runs inside a protected call on the *target* state (writes there can
//! raise: allocation). It only reads the *source* state, with calls that cannot raise
//! provided the source stack has room, which [`SOURCE_SLOTS`] tells the caller to
//! reserve beforehand. So an error in one state never escapes through the other's
//! protected call.

use std::ffi::{c_int, c_void};

use mlua::ffi;

use crate::raw::{protected, RawState};

/// Deepest value nesting copied; counted per value, as the C original counts it:
/// a top-level value is at depth 1 and a table's keys and values one deeper.
pub const MAX_DEPTH: c_int = 30;

/// Source stack slots the copier may use: a key and a value per table level.
pub const SOURCE_SLOTS: c_int = 2 * MAX_DEPTH + 8;

/// Why a copy stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyError {
    /// Nesting deeper than [`MAX_DEPTH`].
    TooDeep,
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
///    [`SOURCE_SLOTS`] free stack slots: reads of `from` then never raise.
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
    // index fixed below the copied values.
    unsafe {
        ffi::luaL_checkstack(to, count + 8, c"too many values to copy".as_ptr());
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
        // returned, cannot raise; the source stack has room (contract reason 2) since
        // each level uses two slots and levels are bounded by `MAX_DEPTH`.
        unsafe {
            let key = ffi::lua_topointer(from, idx) as *mut c_void;
            ffi::luaL_checkstack(to, 4, c"copy too deep".as_ptr());
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
