//! Copying values out of a Lua state: into another state, directly, or into a channel
//! message, which is later written into a state by the same writer.
//!
//! One traversal (the [`Copier`]) reads the source state and writes what it finds to a
//! [`Sink`]: a target state ([`StateSink`]) or a message encoder. Decoding a message
//! drives the same [`StateSink`], so the three directions (state to state, state to
//! message, message to state) share their rules: cycles, the depth limit, unsupported
//! values, and channels, which are copied as the same channel.
//!
//! Where the [`Rules`] allow functions (`spawn`, `new{...}`, channel messages), a Lua
//! function crosses as its bytecode (`lua_dump`, debug information kept) plus its
//! upvalues, each copied by the same rules: a function met twice is one function in
//! the copy (so a local function that calls itself works), upvalues shared between
//! closures stay shared where the flavour can join them (not on 5.1), and the source's
//! global table becomes the target's. A C function that cannot travel as a pointer
//! (it has upvalues, or is a LuaJIT built-in without one) travels as its name in the
//! source's loaded modules (`math.floor`), found in [`c_function_names`].
//!
//! Writing a state runs inside a protected call on that *target* state (writes there
//! can raise: allocation). The source state is only read, with calls that cannot raise
//! provided the source stack has room: [`SOURCE_SLOTS`] free slots on entry, which the
//! caller guarantees, and two more per table level, which the copier takes with
//! [`reserve`] (never raising) only when it meets a table. So an error in one state
//! never escapes through the other's protected call, a copy of flat values needs no
//! more room than the values themselves (as many can cross as the stacks hold), and
//! encoding a message raises nothing at all.

use std::ffi::{c_char, c_int, c_void, CStr};

use mlua::ffi;

use std::fmt::Write as _;

use crate::channel::{Channel, Msg};
use crate::handle;
use crate::message::{Encoder, Item, Reader, View};
use crate::names::Text;
use crate::object::{self, Object};
use crate::pin;
use crate::raw::{protected, push_bytes, registry_get, registry_set, RawState};
#[cfg(not(feature = "lua51"))]
use crate::raw::{upvalue_id, upvalue_join};

/// Deepest value nesting copied; counted per value, as the C original counts it:
/// a top-level value is at depth 1 and a table's keys and values one deeper.
pub const MAX_DEPTH: c_int = 30;

/// Free source stack slots the copier needs on entry: two, to look at a C function's
/// upvalue or at a userdata's metatable (is it a channel?).
pub const SOURCE_SLOTS: c_int = 2;

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

/// Makes room on `l`'s stack for a copy of `first..=last` out of it, before it
/// starts: when a table is among them, [`SOURCE_SLOTS`] plus a few for the caller,
/// and on 5.1 and LuaJIT as many table levels (up to [`MAX_DEPTH`]) as the stack can
/// take. Returns the table levels to pass to the copy.
///
/// # Safety
/// `l` is valid and used by this thread only, in a frame owning nothing: on 5.1 and
/// LuaJIT this runs a protected call on `l`, so its hooks and finalizers may run.
pub unsafe fn prepare_source(l: RawState, first: c_int, last: c_int) -> c_int {
    const CALLER: c_int = 4;
    // Flat values need no level: then nothing runs (no protected call, no garbage),
    // which keeps sending numbers and strings cheap. A function's upvalues are a level.
    // SAFETY: type reads only.
    if !(first..=last).any(|i| {
        matches!(
            unsafe { ffi::lua_type(l, i) },
            ffi::LUA_TTABLE | ffi::LUA_TFUNCTION
        )
    }) {
        return 0;
    }
    #[cfg(any(feature = "lua51", feature = "luajit"))]
    {
        let mut levels = MAX_DEPTH;
        let mut collected = false;
        loop {
            // SAFETY: see the function's contract; `reserve` never raises.
            match unsafe { reserve(l, SOURCE_SLOTS + CALLER + LEVEL_SLOTS * levels) } {
                Ok(()) => return levels,
                // Out of memory, perhaps with garbage around (5.1 has no emergency
                // collection; a child that filled its limit and returned, say):
                // collect it once and try again.
                Err(Shortage::OutOfMemory) if !collected => {
                    collected = true;
                    let mut collect = |l: RawState| -> c_int {
                        // SAFETY: protected on `l`; a finalizer's error stops there.
                        unsafe { ffi::lua_gc(l, ffi::LUA_GCCOLLECT, 0) };
                        0
                    };
                    // SAFETY: the contract; the body owns nothing and does not panic.
                    unsafe { protected(l, 0, 0, &mut collect) };
                }
                Err(_) if levels == 0 => return 0,
                Err(_) => levels /= 2,
            }
        }
    }
    #[cfg(not(any(feature = "lua51", feature = "luajit")))]
    {
        // SAFETY: see the function's contract; `reserve` never raises. A shortage
        // shows again, as an error, when the copy asks for room itself.
        let _ = unsafe { reserve(l, SOURCE_SLOTS + CALLER) };
        MAX_DEPTH
    }
}

/// How many array slots to give the copy of the table at `from[idx]`. Its border
/// (`lua_rawlen`) can be far larger than its entries in a sparse table (`{[1] = 1,
/// [2^24] = 2}` may have border 2^24), so a large border is checked against a count
/// of the entries: the copy never allocates more than the source holds.
///
/// # Safety
/// `from` is valid with two free slots (a level's room); `from[idx]` is a table.
unsafe fn array_hint(from: RawState, idx: c_int) -> c_int {
    const TRUSTED: usize = 1024;
    // SAFETY: `lua_next` over a table nobody modifies meanwhile cannot raise; the
    // key and value it pushes fit in the level's room, and are popped.
    unsafe {
        let border = ffi::lua_rawlen(from, idx);
        if border <= TRUSTED {
            return border as c_int;
        }
        let base = ffi::lua_gettop(from);
        let mut entries = 0usize;
        ffi::lua_pushnil(from);
        while entries < border && ffi::lua_next(from, idx) != 0 {
            entries += 1;
            ffi::lua_settop(from, -2);
        }
        ffi::lua_settop(from, base);
        c_int::try_from(entries.min(border)).unwrap_or(0)
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
    /// Where functions are copied: a value that cannot cross, inside the top-level
    /// value at `index`, and why (`upvalue 'f' of function x.lua:3: a userdata
    /// cannot be copied`). `located` once the innermost function named itself.
    Refused {
        index: c_int,
        why: Text,
        located: bool,
    },
    /// A C function that can only travel by name met before the names were looked
    /// up: look them up ([`c_function_names`]) and copy again.
    NeedNames,
}

/// What a copy may carry.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    pub unsupported: Unsupported,
    /// Lua functions (with their upvalues) and C functions known by name cross, and
    /// the source's global table becomes the target's; else a Lua function is
    /// unsupported, as `new`'s contract says.
    pub functions: bool,
}

impl Rules {
    /// `new`'s arguments.
    pub const ARGUMENTS: Rules = Rules {
        unsupported: Unsupported::Refuse,
        functions: false,
    };
    /// `join`'s results of a `new` thread.
    pub const RESULTS: Rules = Rules {
        unsupported: Unsupported::Describe,
        functions: false,
    };
    /// Values of the entry points that copy functions: `spawn`, `new{...}`, channel
    /// messages.
    pub const VALUES: Rules = Rules {
        unsupported: Unsupported::Refuse,
        functions: true,
    };
    /// `join`'s results of a thread made by `spawn` or `new{...}`.
    pub const VALUE_RESULTS: Rules = Rules {
        unsupported: Unsupported::Describe,
        functions: true,
    };
}

/// What to do with values that cannot be copied.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// Stop with [`CopyError::Unsupported`] (arguments to `new`).
    Refuse,
    /// Put the string `"Un-supported value: <type>: <pointer>"` in its place (results).
    Describe,
}

/// Where the [`Copier`] writes what it reads.
///
/// On a state sink every method may raise (it runs inside a protected call on the
/// target); the message encoder never raises.
trait Sink {
    /// # Safety
    /// For every method: the contract of the copy that drives the sink.
    unsafe fn nil(&mut self);
    unsafe fn boolean(&mut self, b: bool);
    #[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
    unsafe fn integer(&mut self, i: ffi::lua_Integer);
    unsafe fn number(&mut self, n: ffi::lua_Number);
    unsafe fn string(&mut self, s: &[u8]);
    unsafe fn light(&mut self, p: *mut c_void);
    unsafe fn cfunction(&mut self, f: ffi::lua_CFunction);
    /// `channel` is alive for the call (the source holds it).
    unsafe fn channel(&mut self, channel: *const Channel);
    /// Another shared object (a pool); alive for the call.
    unsafe fn object(&mut self, object: &dyn Object);
    /// The placeholder for an unsupported value in results.
    unsafe fn describe(&mut self, tname: *const c_char, p: *const c_void);
    /// Starts the table known to the source as `key`. Returns `true` when that table
    /// was met before in this copy: its copy is written again and nothing follows.
    /// Otherwise its entries follow, each as key, value, [`Sink::table_entry`], then
    /// [`Sink::table_end`].
    unsafe fn table_begin(&mut self, key: *const c_void, narr: c_int) -> bool;
    unsafe fn table_entry(&mut self);
    unsafe fn table_end(&mut self);
    /// Writes the copy made earlier in this copy of the function known as `key`, when
    /// there is one, and says so.
    unsafe fn function_seen(&mut self, key: *const c_void) -> bool;
    /// Starts the function known as `key` from its bytecode; each upvalue follows in
    /// order (a value then [`Sink::upvalue`], or a [`Sink::shared_upvalue`] that said
    /// `true`), then [`Sink::function_end`].
    unsafe fn function_begin(&mut self, key: *const c_void, code: &[u8]);
    /// Upvalue `n` of the current function, whose identity is `id`: joins it to the
    /// same upvalue of an earlier function and returns `true`, or remembers it and
    /// returns `false` (its value follows). `function` is the current function's key.
    #[cfg_attr(feature = "lua51", allow(dead_code))]
    unsafe fn shared_upvalue(
        &mut self,
        n: c_int,
        id: *const c_void,
        function: *const c_void,
    ) -> bool;
    /// The value just written is upvalue `n` of the current function.
    unsafe fn upvalue(&mut self, n: c_int);
    unsafe fn function_end(&mut self);
    /// The target's global table.
    unsafe fn globals(&mut self);
    /// The C function that the target's loaded modules hold as `name`
    /// (`module\0field`).
    unsafe fn named(&mut self, name: &[u8]);
}

/// Writes onto a target state's stack. Tables met more than once become one table in
/// the copy (cycles survive), through a cache table kept in a stack slot below the
/// values.
struct StateSink {
    to: RawState,
    /// Target index of the table mapping source table keys to their copies.
    cache: c_int,
    has_cache: bool,
    /// Registry key of a table of loaded functions by bytecode, for the next function
    /// met (a pool task's): a hit reuses the loaded function instead of loading again.
    loaded: Option<*const u8>,
}

impl StateSink {
    /// Reserves room for `count` values and the cache slot below them.
    ///
    /// # Safety
    /// Protected on `to` (may raise).
    unsafe fn new(to: RawState, count: c_int) -> StateSink {
        // SAFETY: raising on `to` is allowed. The placeholder keeps the cache's
        // index fixed below the copied values; room for it and for the values is all
        // this needs (a table asks for its own room when it is met).
        unsafe {
            room_on_target(to, count + 1, c"stack overflow (too many values to copy)");
            ffi::lua_pushnil(to);
            StateSink {
                to,
                cache: ffi::lua_gettop(to),
                has_cache: false,
                loaded: None,
            }
        }
    }

    /// Removes the cache slot, leaving the copied values.
    ///
    /// # Safety
    /// As for `new`, once every value is written.
    unsafe fn finish(self) {
        // SAFETY: the cache slot is below the copied values; removing it cannot raise.
        unsafe { ffi::lua_remove(self.to, self.cache) };
    }
}

impl Sink for StateSink {
    unsafe fn nil(&mut self) {
        // SAFETY: the sink's contract (stack room checked by `new` and per table).
        unsafe { ffi::lua_pushnil(self.to) }
    }
    unsafe fn boolean(&mut self, b: bool) {
        // SAFETY: as above.
        unsafe { ffi::lua_pushboolean(self.to, b as c_int) }
    }
    #[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
    unsafe fn integer(&mut self, i: ffi::lua_Integer) {
        // SAFETY: as above.
        unsafe { ffi::lua_pushinteger(self.to, i) }
    }
    unsafe fn number(&mut self, n: ffi::lua_Number) {
        // SAFETY: as above.
        unsafe { ffi::lua_pushnumber(self.to, n) }
    }
    unsafe fn string(&mut self, s: &[u8]) {
        // SAFETY: as above; may raise (allocation), which the contract allows.
        unsafe { push_bytes(self.to, s) }
    }
    unsafe fn light(&mut self, p: *mut c_void) {
        // SAFETY: as above.
        unsafe { ffi::lua_pushlightuserdata(self.to, p) }
    }
    unsafe fn cfunction(&mut self, f: ffi::lua_CFunction) {
        // SAFETY: as above; may raise on 5.1 (a closure is allocated).
        unsafe { ffi::lua_pushcfunction(self.to, f) }
    }
    unsafe fn channel(&mut self, channel: *const Channel) {
        // SAFETY: `channel` is alive (the trait's contract); raising is allowed.
        unsafe { handle::push(self.to, channel) }
    }
    unsafe fn object(&mut self, object: &dyn Object) {
        // SAFETY: `object` is alive (the trait's contract); raising is allowed, and
        // the push owns nothing until its last raising call is done.
        unsafe { object.push(self.to) }
    }
    unsafe fn describe(&mut self, tname: *const c_char, p: *const c_void) {
        // SAFETY: `tname` is a static type name; the push may raise (allowed).
        unsafe {
            ffi::lua_pushfstring(self.to, c"Un-supported value: %s: %p".as_ptr(), tname, p);
        }
    }
    unsafe fn table_begin(&mut self, key: *const c_void, narr: c_int) -> bool {
        // SAFETY: raising is allowed; `cached` made room for the new table.
        unsafe {
            if self.cached(key) {
                return true;
            }
            ffi::lua_createtable(self.to, narr, 0);
            self.remember(key);
        }
        false
    }
    unsafe fn table_entry(&mut self) {
        // SAFETY: the table, a key and a value are on top; raising is allowed.
        unsafe {
            expect_table(self.to, -3);
            ffi::lua_rawset(self.to, -3)
        }
    }
    unsafe fn table_end(&mut self) {}
    unsafe fn function_seen(&mut self, key: *const c_void) -> bool {
        // SAFETY: raising is allowed.
        unsafe { self.cached(key) }
    }
    unsafe fn function_begin(&mut self, key: *const c_void, code: &[u8]) {
        let to = self.to;
        // SAFETY: raising is allowed. The bytecode was made by `lua_dump` of this Lua
        // version (binary mode only: never source text).
        unsafe {
            self.make_room();
            if let Some(loaded) = self.loaded.take() {
                load_cached(to, code, loaded);
            } else {
                load_bytecode(to, code);
            }
            self.remember(key);
        }
    }
    unsafe fn shared_upvalue(&mut self, n: c_int, id: *const c_void, _: *const c_void) -> bool {
        #[cfg(feature = "lua51")]
        {
            let _ = (n, id);
            false
        }
        #[cfg(not(feature = "lua51"))]
        // SAFETY: raising is allowed; every slot is checked before a raw call on it
        // (Lua code run by an allocation may replace them).
        unsafe {
            let to = self.to;
            room_on_target(to, 4, c"stack overflow (copy too deep)");
            expect_table(to, self.cache);
            ffi::lua_pushlightuserdata(to, id as *mut c_void);
            ffi::lua_rawget(to, self.cache);
            if ffi::lua_type(to, -1) == ffi::LUA_TTABLE {
                // [function, {first, m}]
                ffi::lua_rawgeti(to, -1, 1);
                ffi::lua_rawgeti(to, -2, 2);
                let m = ffi::lua_tointeger(to, -1) as c_int;
                ffi::lua_settop(to, -2);
                expect_lua_function(to, -3);
                expect_lua_function(to, -1);
                if m < 1 || !has_upvalue(to, -1, m) || !has_upvalue(to, -3, n) {
                    tampered(to);
                }
                upvalue_join(to, -3, n, -1, m);
                ffi::lua_settop(to, -3);
                return true;
            }
            ffi::lua_settop(to, -2);
            // cache[id] = {function, n}: the first function with this upvalue.
            ffi::lua_createtable(to, 2, 0);
            ffi::lua_pushvalue(to, -2);
            expect_table(to, -2);
            ffi::lua_rawseti(to, -2, 1);
            ffi::lua_pushinteger(to, n as ffi::lua_Integer);
            expect_table(to, -2);
            ffi::lua_rawseti(to, -2, 2);
            ffi::lua_pushlightuserdata(to, id as *mut c_void);
            ffi::lua_insert(to, -2);
            expect_table(to, self.cache);
            ffi::lua_rawset(to, self.cache);
            false
        }
    }
    unsafe fn upvalue(&mut self, n: c_int) {
        // SAFETY: raising is allowed; the function is below the value.
        unsafe {
            expect_lua_function(self.to, -2);
            if ffi::lua_setupvalue(self.to, -2, n).is_null() {
                ffi::lua_settop(self.to, -2);
            }
        }
    }
    unsafe fn function_end(&mut self) {}
    unsafe fn globals(&mut self) {
        // SAFETY: raising is allowed; room was checked for this value.
        unsafe { push_globals(self.to) }
    }
    unsafe fn named(&mut self, name: &[u8]) {
        // SAFETY: raising is allowed.
        unsafe { push_named(self.to, name) }
    }
}

impl StateSink {
    /// Pushes the copy cached under `key` and returns `true`, or makes room for a new
    /// copy and returns `false`.
    ///
    /// # Safety
    /// Protected on the target (may raise).
    unsafe fn cached(&mut self, key: *const c_void) -> bool {
        let to = self.to;
        // SAFETY: raising is allowed.
        unsafe {
            self.make_room();
            ffi::lua_pushlightuserdata(to, key as *mut c_void);
            ffi::lua_rawget(to, self.cache);
            if ffi::lua_type(to, -1) != ffi::LUA_TNIL {
                return true;
            }
            ffi::lua_settop(to, -2);
        }
        false
    }

    /// Makes room for a table or function and the cache, which it makes on first use.
    ///
    /// # Safety
    /// Protected on the target (may raise).
    unsafe fn make_room(&mut self) {
        let to = self.to;
        // SAFETY: raising is allowed; the cache slot exists (made by `new`).
        unsafe {
            room_on_target(to, 4, c"stack overflow (copy too deep)");
            if !self.has_cache {
                ffi::lua_newtable(to);
                ffi::lua_replace(to, self.cache);
                self.has_cache = true;
            }
            expect_table(to, self.cache);
        }
    }

    /// Caches the new copy on top under `key`.
    ///
    /// # Safety
    /// Protected on the target (may raise); `cached` said `false` for `key` just before.
    unsafe fn remember(&mut self, key: *const c_void) {
        let to = self.to;
        // SAFETY: raising is allowed. Checked again: making the copy may have run a
        // finalizer.
        unsafe {
            ffi::lua_pushlightuserdata(to, key as *mut c_void);
            ffi::lua_pushvalue(to, -2);
            expect_table(to, self.cache);
            ffi::lua_rawset(to, self.cache);
        }
    }

    /// Makes upvalue `n` of the function on top refer to upvalue `m` of the function
    /// cached under `function` (a message's join).
    ///
    /// # Safety
    /// Protected on the target (may raise).
    #[cfg_attr(feature = "lua51", allow(unused_variables))]
    unsafe fn join(&mut self, n: c_int, function: *const c_void, m: c_int) {
        #[cfg(not(feature = "lua51"))]
        // SAFETY: raising is allowed; both values are checked to be Lua functions
        // with those upvalues before the unchecked join.
        unsafe {
            let to = self.to;
            room_on_target(to, 2, c"stack overflow (copy too deep)");
            expect_table(to, self.cache);
            ffi::lua_pushlightuserdata(to, function as *mut c_void);
            ffi::lua_rawget(to, self.cache);
            expect_lua_function(to, -2);
            expect_lua_function(to, -1);
            if n < 1 || m < 1 || !has_upvalue(to, -2, n) || !has_upvalue(to, -1, m) {
                tampered(to);
            }
            upvalue_join(to, -2, n, -1, m);
            ffi::lua_settop(to, -2);
        }
    }
}

/// Loads `code` (bytecode from `lua_dump`) onto `to`, or raises.
///
/// # Safety
/// Protected on `to`, with a free slot.
unsafe fn load_bytecode(to: RawState, code: &[u8]) {
    // SAFETY: see the function's contract. Binary mode only: never source text.
    unsafe {
        let status = ffi::luaL_loadbufferx(
            to,
            code.as_ptr().cast(),
            code.len(),
            c"=(copied function)".as_ptr(),
            c"b".as_ptr(),
        );
        if status != ffi::LUA_OK {
            ffi::lua_error(to);
        }
    }
}

/// How many functions a worker state keeps loaded before it starts over.
const LOADED_MAX: ffi::lua_Integer = 256;

/// Pushes the function loaded from `code`: the one kept in `registry[key]` (a table
/// of bytecode → function) when there is one, else a new one, then kept there. Its
/// upvalues are set by the copy that follows, so a kept function is as good as a new
/// one for a task that runs after the previous one ended.
///
/// # Safety
/// Protected on `to`, with four free slots.
unsafe fn load_cached(to: RawState, code: &[u8], key: *const u8) {
    // SAFETY: see the function's contract; raw operations on a table just checked.
    unsafe {
        if registry_get(to, key) != ffi::LUA_TTABLE {
            ffi::lua_settop(to, -2);
            load_bytecode(to, code);
            return;
        }
        push_bytes(to, code);
        expect_table(to, -2);
        ffi::lua_rawget(to, -2);
        if ffi::lua_type(to, -1) == ffi::LUA_TFUNCTION && ffi::lua_iscfunction(to, -1) == 0 {
            ffi::lua_remove(to, -2);
            // A task may have given its own function another environment
            // (`setfenv(1, t)`); a new load would have the globals, so the kept one
            // gets them again. (On 5.2+ `_ENV` is an upvalue, set by the copy.)
            #[cfg(any(feature = "lua51", feature = "luajit"))]
            {
                ffi::lua_pushvalue(to, ffi::LUA_GLOBALSINDEX);
                ffi::lua_setfenv(to, -2);
            }
            return;
        }
        ffi::lua_settop(to, -2);
        // The count of kept functions, under the key itself.
        ffi::lua_pushlightuserdata(to, key as *mut c_void);
        ffi::lua_rawget(to, -2);
        let kept = ffi::lua_tointeger(to, -1);
        ffi::lua_settop(to, -2);
        if kept >= LOADED_MAX {
            ffi::lua_settop(to, -2);
            ffi::lua_newtable(to);
            ffi::lua_pushvalue(to, -1);
            registry_set(to, key);
        }
        load_bytecode(to, code);
        push_bytes(to, code);
        ffi::lua_pushvalue(to, -2);
        expect_table(to, -4);
        ffi::lua_rawset(to, -4);
        ffi::lua_pushlightuserdata(to, key as *mut c_void);
        ffi::lua_pushinteger(to, if kept >= LOADED_MAX { 1 } else { kept + 1 });
        expect_table(to, -4);
        ffi::lua_rawset(to, -4);
        ffi::lua_remove(to, -2);
    }
}

/// Pushes `l`'s global table.
///
/// # Safety
/// `l` has a free slot; never raises.
unsafe fn push_globals(l: RawState) {
    // SAFETY: see the function's contract; raw reads.
    unsafe {
        #[cfg(any(feature = "lua51", feature = "luajit"))]
        ffi::lua_pushvalue(l, ffi::LUA_GLOBALSINDEX);
        #[cfg(not(any(feature = "lua51", feature = "luajit")))]
        ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
    }
}

/// The address of `l`'s global table.
///
/// # Safety
/// `l` has a free slot; never raises.
unsafe fn globals_of(l: RawState) -> *const c_void {
    // SAFETY: see the function's contract.
    unsafe {
        push_globals(l);
        let p = ffi::lua_topointer(l, -1);
        ffi::lua_settop(l, -2);
        p
    }
}

/// Pushes `package.loaded[module][field]` of `to`, for `name` = `module\0field`, or
/// raises when that is not a C function there.
///
/// # Safety
/// Protected on `to` (may raise).
unsafe fn push_named(to: RawState, name: &[u8]) {
    let split = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    let (module, field) = (&name[..split], name.get(split + 1..).unwrap_or(&[]));
    // SAFETY: raising is allowed; raw gets only (no metamethod runs).
    unsafe {
        room_on_target(to, 3, c"stack overflow (copy too deep)");
        ffi::lua_pushstring(to, c"_LOADED".as_ptr());
        ffi::lua_rawget(to, ffi::LUA_REGISTRYINDEX);
        if ffi::lua_type(to, -1) == ffi::LUA_TTABLE {
            push_bytes(to, module);
            // Pushing the name may have run a finalizer that replaced the table.
            expect_table(to, -2);
            ffi::lua_rawget(to, -2);
            if ffi::lua_type(to, -1) == ffi::LUA_TTABLE {
                push_bytes(to, field);
                expect_table(to, -2);
                ffi::lua_rawget(to, -2);
                if ffi::lua_iscfunction(to, -1) != 0 {
                    ffi::lua_replace(to, -3);
                    ffi::lua_settop(to, -2);
                    return;
                }
            }
        }
        room_on_target(to, 5, c"stack overflow (copy too deep)");
        ffi::lua_pushstring(to, c"cannot copy function ".as_ptr());
        push_bytes(to, module);
        ffi::lua_pushstring(to, c".".as_ptr());
        push_bytes(to, field);
        ffi::lua_pushstring(to, c": it is not loaded in the receiving state".as_ptr());
        ffi::lua_concat(to, 5);
        ffi::lua_error(to);
    }
}

/// Encodes into a channel message; never raises.
impl Sink for Encoder<Channel> {
    unsafe fn nil(&mut self) {
        Encoder::nil(self)
    }
    unsafe fn boolean(&mut self, b: bool) {
        Encoder::boolean(self, b)
    }
    #[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
    unsafe fn integer(&mut self, i: ffi::lua_Integer) {
        Encoder::integer(self, i)
    }
    unsafe fn number(&mut self, n: ffi::lua_Number) {
        Encoder::number(self, n)
    }
    unsafe fn string(&mut self, s: &[u8]) {
        Encoder::string(self, s)
    }
    unsafe fn light(&mut self, p: *mut c_void) {
        Encoder::light(self, p)
    }
    unsafe fn cfunction(&mut self, f: ffi::lua_CFunction) {
        Encoder::cfunction(self, f as usize)
    }
    unsafe fn channel(&mut self, channel: *const Channel) {
        // SAFETY: `channel` is alive (the trait's contract) and came from
        // `Arc::into_raw` (it is a channel userdata's reference).
        unsafe { self.reference(channel) }
    }
    unsafe fn object(&mut self, object: &dyn Object) {
        Encoder::object(self, object.carry())
    }
    unsafe fn describe(&mut self, tname: *const c_char, p: *const c_void) {
        // SAFETY: `tname` is a static NUL-terminated type name from Lua.
        let tname = unsafe { std::ffi::CStr::from_ptr(tname) };
        let text = format!("Un-supported value: {}: {:p}", tname.to_string_lossy(), p);
        Encoder::string(self, text.as_bytes())
    }
    unsafe fn table_begin(&mut self, key: *const c_void, narr: c_int) -> bool {
        Encoder::table_begin(self, key, narr.max(0) as u32)
    }
    unsafe fn table_entry(&mut self) {}
    unsafe fn table_end(&mut self) {
        Encoder::table_end(self)
    }
    unsafe fn function_seen(&mut self, key: *const c_void) -> bool {
        Encoder::seen(self, key)
    }
    unsafe fn function_begin(&mut self, key: *const c_void, code: &[u8]) {
        Encoder::function_begin(self, key, code)
    }
    unsafe fn shared_upvalue(
        &mut self,
        n: c_int,
        id: *const c_void,
        function: *const c_void,
    ) -> bool {
        Encoder::shared_upvalue(self, n as u32, id, function)
    }
    unsafe fn upvalue(&mut self, _: c_int) {}
    unsafe fn function_end(&mut self) {
        Encoder::function_end(self)
    }
    unsafe fn globals(&mut self) {
        Encoder::globals(self)
    }
    unsafe fn named(&mut self, name: &[u8]) {
        Encoder::named(self, name)
    }
}

/// One traversal of source values, written to a sink.
struct Copier<'s, S: Sink> {
    from: RawState,
    /// Table levels the source has room for (see [`prepare_source`]); used on 5.1 and
    /// LuaJIT only, where making room mid-copy could run Lua code.
    levels: c_int,
    sink: &'s mut S,
    rules: Rules,
    /// Source index of the top-level value being copied, for error reports.
    top_level: c_int,
    /// The source's global table where functions are copied, else null.
    globals: *const c_void,
    /// Where a function's bytecode is dumped. Owned by the caller, outside the
    /// protected call on the target: a raise there must not skip its drop.
    dump: &'s mut Vec<u8>,
    /// The names of C functions were looked up just before this copy: a C function
    /// missing from them is unsupported (else: look them up and copy again).
    names_fresh: bool,
}

impl<'s, S: Sink> Copier<'s, S> {
    /// # Safety
    /// `from` is valid with a free slot (to find its global table).
    unsafe fn new(
        from: RawState,
        sink: &'s mut S,
        rules: Rules,
        levels: c_int,
        dump: &'s mut Vec<u8>,
        names_fresh: bool,
    ) -> Self {
        let globals = if rules.functions {
            // SAFETY: see the function's contract.
            unsafe { globals_of(from) }
        } else {
            std::ptr::null()
        };
        Copier {
            from,
            levels,
            sink,
            rules,
            top_level: 0,
            globals,
            dump,
            names_fresh,
        }
    }
}

/// What one copy onto a state walks: `from[first..=last]`, by `rules`.
struct Walk {
    from: RawState,
    first: c_int,
    last: c_int,
    rules: Rules,
    levels: c_int,
    names_fresh: bool,
}

/// Copies the walk's values onto `to`, leaving exactly those values pushed on success.
///
/// # Safety
/// 1. Runs inside a protected call on `to` (it may raise there) with `to` valid.
/// 2. `from` is a valid state not used by any other thread now, with at least
///    [`SOURCE_SLOTS`] free stack slots: reads of `from` then never raise.
/// 3. `first..=last` are valid absolute indices of `from`.
unsafe fn copy_values(walk: &Walk, to: RawState, dump: &mut Vec<u8>) -> Result<c_int, CopyError> {
    let count = count(walk.first, walk.last);
    // SAFETY: raising on `to` is allowed (reason 1).
    let mut sink = unsafe { StateSink::new(to, count) };
    // SAFETY: `from` has the reserved slots (reason 2).
    let mut copier = unsafe {
        Copier::new(
            walk.from,
            &mut sink,
            walk.rules,
            walk.levels,
            dump,
            walk.names_fresh,
        )
    };
    for idx in walk.first..=walk.last {
        copier.top_level = idx;
        // SAFETY: forwarded contract.
        unsafe { copier.value(idx, 1)? };
    }
    // SAFETY: every value is written.
    unsafe { sink.finish() };
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
    rules: Rules,
    levels: c_int,
) -> Result<c_int, Failure> {
    // Owned here, outside the protected call, and lent to the copier.
    let mut dump = Vec::new();
    let mut walk = Walk {
        from,
        first,
        last,
        rules,
        levels,
        names_fresh: false,
    };
    loop {
        let mut refused = None;
        let mut body = |to: RawState| -> c_int {
            // SAFETY: protected on `to` (contract reason 1); `from` is only read
            // (reason 2).
            match unsafe { copy_values(&walk, to, &mut dump) } {
                Ok(n) => n,
                Err(e) => {
                    refused = Some(e);
                    0
                }
            }
        };
        // SAFETY: the contract above is `protected`'s; the body owns nothing and does
        // not panic.
        let status = unsafe { protected(to, 0, ffi::LUA_MULTRET, &mut body) };
        match (status, refused) {
            (ffi::LUA_OK, None) => return Ok(count(first, last)),
            (ffi::LUA_OK, Some(CopyError::NeedNames)) if !walk.names_fresh => {
                // SAFETY: `from` is used by this thread only, in a frame whose owned
                // values (`dump`) a raise inside these protected calls cannot skip.
                // Looking the names up may run the source's finalizers, which may
                // change its stack: its room is made again.
                unsafe {
                    c_function_names(from);
                    walk.levels = prepare_source(from, first, last);
                }
                walk.names_fresh = true;
            }
            (ffi::LUA_OK, Some(e)) => return Err(Failure::Copy(e)),
            _ => return Err(Failure::Raised),
        }
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

/// Raises on `to` unless the value at `idx` is a table. The copy keeps its cache and
/// the tables it fills in stack slots, and Lua code that runs meanwhile (a finalizer
/// run by an allocation, a hook) can replace them with `debug.setlocal`: a raw table
/// call on what is no longer a table would crash the process.
///
/// # Safety
/// Inside a protected call on `to`; `idx` is a valid index.
unsafe fn expect_table(to: RawState, idx: c_int) {
    // SAFETY: see the function's contract.
    unsafe {
        if ffi::lua_type(to, idx) != ffi::LUA_TTABLE {
            tampered(to);
        }
    }
}

fn count(first: c_int, last: c_int) -> c_int {
    (last - first + 1).max(0)
}

impl<S: Sink> Copier<'_, S> {
    /// Writes a copy of `from[idx]` to the sink. `depth` is this value's depth.
    ///
    /// # Safety
    /// The contract of [`copy_values`] (or [`encode`]); `idx` is an absolute index of
    /// `from`.
    unsafe fn value(&mut self, idx: c_int, depth: c_int) -> Result<(), CopyError> {
        if depth > MAX_DEPTH {
            return Err(CopyError::TooDeep);
        }
        let from = self.from;
        // SAFETY: reads of `from` below do not allocate (strings are not converted,
        // numbers are read as numbers, `channel_at` uses two of the reserved slots);
        // the sink may raise on its target, which the contract allows.
        unsafe {
            match ffi::lua_type(from, idx) {
                ffi::LUA_TNIL => self.sink.nil(),
                ffi::LUA_TBOOLEAN => self.sink.boolean(ffi::lua_toboolean(from, idx) != 0),
                ffi::LUA_TNUMBER => self.number(idx),
                ffi::LUA_TSTRING => {
                    let mut len = 0usize;
                    let ptr = ffi::lua_tolstring(from, idx, &mut len);
                    self.sink
                        .string(std::slice::from_raw_parts(ptr.cast(), len));
                }
                ffi::LUA_TLIGHTUSERDATA => self.sink.light(ffi::lua_touserdata(from, idx)),
                ffi::LUA_TTABLE
                    if !self.globals.is_null() && ffi::lua_topointer(from, idx) == self.globals =>
                {
                    self.sink.globals()
                }
                ffi::LUA_TTABLE => self.table(idx, depth)?,
                ffi::LUA_TFUNCTION if plain_c_function(from, idx) => {
                    if let Some(f) = ffi::lua_tocfunction(from, idx) {
                        // The copy must outlive the state that loaded its module.
                        pin::library_of(f as *const c_void);
                        self.sink.cfunction(f);
                    }
                }
                ffi::LUA_TFUNCTION if self.rules.functions => {
                    if ffi::lua_iscfunction(from, idx) == 0 {
                        self.function(idx, depth)?
                    } else {
                        self.named(idx)?
                    }
                }
                ffi::LUA_TUSERDATA => {
                    let channel = handle::channel_at(from, idx);
                    if !channel.is_null() {
                        self.sink.channel(channel)
                    } else if let Some(object) = object::at(from, idx) {
                        self.sink.object(&*object)
                    } else {
                        self.unsupported(idx)?
                    }
                }
                _ => self.unsupported(idx)?,
            }
        }
        Ok(())
    }

    /// Writes the number at `from[idx]`, keeping integer and float apart on 5.3+.
    ///
    /// # Safety
    /// As for [`Copier::value`]; `from[idx]` is a number.
    unsafe fn number(&mut self, idx: c_int) {
        // SAFETY: see the function's contract; none of the reads allocate.
        unsafe {
            #[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
            if ffi::lua_isinteger(self.from, idx) != 0 {
                self.sink.integer(ffi::lua_tointeger(self.from, idx));
                return;
            }
            self.sink.number(ffi::lua_tonumber(self.from, idx));
        }
    }

    /// Writes the table at `from[idx]`, or a reference to the copy made earlier.
    ///
    /// # Safety
    /// As for [`Copier::value`].
    unsafe fn table(&mut self, idx: c_int, depth: c_int) -> Result<(), CopyError> {
        let from = self.from;
        // SAFETY: see `value`. `lua_next` over a table we do not modify, with keys it
        // returned, cannot raise; the source stack has room for the key and the value
        // it pushes, with `SOURCE_SLOTS` left above them for the nested values, as
        // `reserve` (which never raises) made sure.
        unsafe {
            let key = ffi::lua_topointer(from, idx);
            self.enter_level()?;
            let narr = array_hint(from, idx);
            if self.sink.table_begin(key, narr) {
                self.levels += 1;
                return Ok(());
            }
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
                self.sink.table_entry();
                ffi::lua_settop(from, base + 1);
            }
            self.sink.table_end();
            self.levels += 1;
        }
        Ok(())
    }

    /// Writes the Lua function at `from[idx]`: its bytecode and upvalues, or a
    /// reference to the copy made earlier.
    ///
    /// # Safety
    /// As for [`Copier::value`].
    unsafe fn function(&mut self, idx: c_int, depth: c_int) -> Result<(), CopyError> {
        let from = self.from;
        // SAFETY: see `value`. The dump, `lua_getupvalue`, `lua_upvalueid` and
        // `lua_getfenv` read the source without allocating in it (on LuaJIT the dump
        // runs under its own protected call); each pushed value fits in the level's
        // room and is popped.
        unsafe {
            let key = ffi::lua_topointer(from, idx);
            if self.sink.function_seen(key) {
                return Ok(());
            }
            self.enter_level()?;
            if !dump(from, idx, self.dump) {
                self.levels += 1;
                return self.unsupported(idx);
            }
            self.sink.function_begin(key, self.dump);
            let base = ffi::lua_gettop(from);
            let mut n = 1;
            loop {
                let name = ffi::lua_getupvalue(from, idx, n);
                if name.is_null() {
                    break;
                }
                #[cfg(not(feature = "lua51"))]
                if self.sink.shared_upvalue(n, upvalue_id(from, idx, n), key) {
                    ffi::lua_settop(from, base);
                    n += 1;
                    continue;
                }
                // `_ENV` is the function's globals wherever it points (a sandbox's
                // table, busted's): the target's globals take its place.
                if CStr::from_ptr(name) == c"_ENV" {
                    self.sink.globals();
                } else if let Err(e) = self.value(base + 1, depth + 1) {
                    ffi::lua_settop(from, base);
                    return Err(self.locate(e, idx, name));
                }
                self.sink.upvalue(n);
                ffi::lua_settop(from, base);
                n += 1;
            }
            #[cfg(feature = "lua51")]
            if upvalue_count(from, idx) >= n {
                // A function loaded from stripped bytecode hides its upvalues from
                // `lua_getupvalue` on 5.1: copying it would silently lose them.
                self.levels += 1;
                return Err(CopyError::Refused {
                    index: self.top_level,
                    why: Text::new("a stripped function with upvalues cannot be copied on Lua 5.1"),
                    located: false,
                });
            }
            // On 5.1 and LuaJIT the function's environment plays `_ENV`'s part: the
            // loaded copy already has the target's globals as its environment.
            self.sink.function_end();
            self.levels += 1;
        }
        Ok(())
    }

    /// Writes the C function at `from[idx]` by its name in the source's loaded
    /// modules, when [`c_function_names`] found one.
    ///
    /// # Safety
    /// As for [`Copier::value`].
    unsafe fn named(&mut self, idx: c_int) -> Result<(), CopyError> {
        let from = self.from;
        // SAFETY: see `value`: raw reads with a light userdata key and a function
        // key, in the `SOURCE_SLOTS`; the name stays on the stack while it is written.
        unsafe {
            let base = ffi::lua_gettop(from);
            if registry_get(from, &NAMES_KEY) == ffi::LUA_TTABLE {
                ffi::lua_pushvalue(from, idx);
                ffi::lua_rawget(from, -2);
                if ffi::lua_type(from, -1) == ffi::LUA_TSTRING {
                    let mut len = 0usize;
                    let ptr = ffi::lua_tolstring(from, -1, &mut len);
                    self.sink.named(std::slice::from_raw_parts(ptr.cast(), len));
                    ffi::lua_settop(from, base);
                    return Ok(());
                }
            }
            ffi::lua_settop(from, base);
            if !self.names_fresh {
                return Err(CopyError::NeedNames);
            }
            self.unsupported(idx)
        }
    }

    /// Names the function at `from[idx]` and its upvalue `name` in a refusal that no
    /// inner function has named yet.
    ///
    /// # Safety
    /// As for [`Copier::value`]; `name` is the upvalue's name from `lua_getupvalue`
    /// (alive with the function).
    unsafe fn locate(&self, e: CopyError, idx: c_int, name: *const c_char) -> CopyError {
        let CopyError::Refused {
            index,
            why,
            located: false,
        } = e
        else {
            return e;
        };
        let mut text = Text::new("");
        // SAFETY: see the function's contract; `lua_getinfo` with "S" fills the
        // record without allocating, and pops the function pushed for it.
        unsafe {
            let name = CStr::from_ptr(name).to_string_lossy();
            if name.is_empty() || name.starts_with('(') || name == "?" {
                // Stripped: the upvalue has no name.
                text.push(b"an upvalue of ");
            } else {
                let _ = write!(text, "upvalue '{name}' of ");
            }
            let mut ar: ffi::lua_Debug = std::mem::zeroed();
            ffi::lua_pushvalue(self.from, idx);
            if ffi::lua_getinfo(self.from, c">S".as_ptr(), &mut ar) != 0 {
                let src = CStr::from_ptr(ar.short_src.as_ptr()).to_string_lossy();
                let _ = write!(text, "function {}:{}: ", src, ar.linedefined);
            } else {
                text.push(b"a function: ");
            }
        }
        text.push(why.as_bytes());
        CopyError::Refused {
            index,
            why: text,
            located: true,
        }
    }

    /// Makes room on the source for one more table level: its key and value, with
    /// `SOURCE_SLOTS` above them.
    ///
    /// # Safety
    /// As for [`Copier::value`].
    unsafe fn enter_level(&mut self) -> Result<(), CopyError> {
        self.levels -= 1;
        #[cfg(any(feature = "lua51", feature = "luajit"))]
        {
            // The room was made before the copy began (`prepare_source`): growing the
            // stack here would run a protected call on the source, and with it the
            // source's hooks and finalizers, Lua code that could change the very
            // values being walked (`debug.setlocal`).
            if self.levels < 0 {
                return Err(CopyError::NoRoom(Shortage::StackFull));
            }
            Ok(())
        }
        #[cfg(not(any(feature = "lua51", feature = "luajit")))]
        {
            // `lua_checkstack` runs no Lua code on 5.2+ and never raises.
            // SAFETY: `from` is valid (the copy's contract).
            unsafe { reserve(self.from, LEVEL_SLOTS + SOURCE_SLOTS) }.map_err(CopyError::NoRoom)
        }
    }

    /// Handles a value that cannot cross states.
    ///
    /// # Safety
    /// As for [`Copier::value`].
    unsafe fn unsupported(&mut self, idx: c_int) -> Result<(), CopyError> {
        match self.rules.unsupported {
            Unsupported::Refuse if self.rules.functions => Err(CopyError::Refused {
                index: self.top_level,
                // SAFETY: a type read.
                why: Text::new(unsafe { refusal(self.from, idx) }),
                located: false,
            }),
            Unsupported::Refuse => Err(CopyError::Unsupported {
                index: self.top_level,
            }),
            Unsupported::Describe => {
                // SAFETY: `lua_typename` returns a static string; `lua_topointer` only
                // reads; the sink may raise on its target, which is allowed.
                unsafe {
                    let tname = ffi::lua_typename(self.from, ffi::lua_type(self.from, idx));
                    let ptr = ffi::lua_topointer(self.from, idx);
                    self.sink.describe(tname, ptr);
                }
                Ok(())
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Messages

/// Copies `from[idx]` into a new message, by [`Rules::VALUES`] (functions cross,
/// unsupported values are refused). Raises nothing and runs no Lua code: when a C
/// function must travel by name and the names were not looked up (`names_fresh`),
/// it returns [`CopyError::NeedNames`]; the caller runs [`c_function_names`] and
/// tries again. `buffer(len)` gives the buffer for a message of `len` bytes (0 when
/// not known beforehand).
///
/// # Safety
/// `from` is a valid state used by this thread only, with at least [`SOURCE_SLOTS`]
/// free stack slots; `idx` is an absolute index of a value in it.
pub unsafe fn encode(
    from: RawState,
    idx: c_int,
    buffer: &mut dyn FnMut(usize) -> Vec<u8>,
    levels: c_int,
    names_fresh: bool,
    rules: Rules,
) -> Result<Msg, CopyError> {
    // SAFETY: reads only (see `Copier::value`), within the reserved slots.
    unsafe {
        match ffi::lua_type(from, idx) {
            ffi::LUA_TBOOLEAN => return Ok(Msg::boolean(ffi::lua_toboolean(from, idx) != 0)),
            ffi::LUA_TNUMBER => {
                #[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
                if ffi::lua_isinteger(from, idx) != 0 {
                    return Ok(Msg::integer(ffi::lua_tointeger(from, idx)));
                }
                return Ok(Msg::number(ffi::lua_tonumber(from, idx)));
            }
            ffi::LUA_TSTRING => {
                let mut len = 0usize;
                let ptr = ffi::lua_tolstring(from, idx, &mut len);
                let bytes = std::slice::from_raw_parts(ptr.cast(), len);
                return Ok(Msg::string(bytes, buffer(len)));
            }
            _ => {}
        }
        let mut dump = Vec::new();
        let mut encoder = Encoder::with_buffer(buffer(0));
        let mut copier = Copier::new(from, &mut encoder, rules, levels, &mut dump, names_fresh);
        copier.top_level = idx;
        copier.value(idx, 1)?;
        Ok(encoder.finish())
    }
}

/// Pushes the value of `msg` onto `to`. Booleans and numbers are pushed directly (that
/// cannot raise); anything else is written inside a protected call on `to`. On
/// failure (out of memory) the error object is on top of `to` instead.
///
/// # Safety
/// `to` is valid, used by this thread only, with three free stack slots, in a frame
/// that owns nothing needing `Drop` across this call.
pub unsafe fn deliver(msg: &Msg, to: RawState) -> Result<(), ()> {
    let view = msg.view();
    // SAFETY: the direct pushes use a free slot (the contract) and allocate nothing.
    unsafe {
        match view {
            View::Bool(b) => ffi::lua_pushboolean(to, b as c_int),
            View::Num(n) => ffi::lua_pushnumber(to, n),
            View::Int(i) => push_integer(to, i),
            View::Str(_) | View::Encoded(_) => return deliver_protected(view, to),
        }
    }
    Ok(())
}

/// Writes a string or encoded value onto `to` inside a protected call.
///
/// # Safety
/// As for [`deliver`].
unsafe fn deliver_protected(view: View<'_, Channel>, to: RawState) -> Result<(), ()> {
    let mut view = Some(view);
    let mut body = |to: RawState| -> c_int {
        if let Some(view) = view.take() {
            // SAFETY: protected on `to`; the message outlives the call.
            unsafe { write_view(to, view, None) };
        }
        1
    };
    // SAFETY: the contract gives `protected`'s; the body owns nothing needing `Drop`
    // across a raise (the view only borrows the message) and does not panic.
    match unsafe { protected(to, 0, 1, &mut body) } {
        ffi::LUA_OK => Ok(()),
        _ => Err(()),
    }
}

/// # Safety
/// `to` has a free slot; never raises.
unsafe fn push_integer(to: RawState, i: i64) {
    // SAFETY: see the function's contract. Integer messages are only made on 5.3+;
    // elsewhere the value would be pushed as the number it is.
    unsafe {
        #[cfg(any(feature = "lua53", feature = "lua54", feature = "lua55"))]
        ffi::lua_pushinteger(to, i);
        #[cfg(not(any(feature = "lua53", feature = "lua54", feature = "lua55")))]
        ffi::lua_pushnumber(to, i as ffi::lua_Number);
    }
}

/// Pushes the function of a pool task's message onto `to`, reusing the function
/// loaded for an earlier task with the same bytecode (kept in `registry[loaded]` of
/// `to`), so that a function submitted many times is loaded once per worker.
/// On failure the error object is on top of `to` instead.
///
/// # Safety
/// As for [`deliver`].
pub unsafe fn deliver_task(msg: &Msg, to: RawState, loaded: &'static u8) -> Result<(), ()> {
    let view = Some(msg.view());
    let mut view = view;
    let mut body = |to: RawState| -> c_int {
        if let Some(view) = view.take() {
            // SAFETY: protected on `to`; the message outlives the call.
            unsafe { write_view(to, view, Some(loaded)) };
        }
        1
    };
    // SAFETY: as in `deliver_protected`.
    match unsafe { protected(to, 0, 1, &mut body) } {
        ffi::LUA_OK => Ok(()),
        _ => Err(()),
    }
}

/// Writes a message's value onto `to`, through the state sink for encoded values
/// (whose first function, with `loaded`, may be one loaded before: see
/// [`deliver_task`]).
///
/// # Safety
/// Protected on `to` (may raise); the message that `view` borrows is alive.
unsafe fn write_view(to: RawState, view: View<'_, Channel>, loaded: Option<*const u8>) {
    // SAFETY: see the function's contract.
    unsafe {
        match view {
            View::Bool(b) => ffi::lua_pushboolean(to, b as c_int),
            View::Num(n) => ffi::lua_pushnumber(to, n),
            View::Int(i) => push_integer(to, i),
            View::Str(s) => push_bytes(to, s),
            View::Encoded(mut reader) => {
                let mut sink = StateSink::new(to, 1);
                sink.loaded = loaded;
                let mut tables = 0u32;
                if let Some(item) = reader.next() {
                    decode(&mut reader, item, &mut sink, &mut tables);
                }
                sink.finish();
            }
        }
    }
}

/// Writes the value that starts with `item`, reading its parts from `reader`.
/// Encoded tables are numbered in order; the number plus one (never null) is the
/// table's key in the state sink's cache, so back references find their copy.
///
/// # Safety
/// As for [`write_view`]. Nesting is bounded by [`MAX_DEPTH`] (checked when encoding).
unsafe fn decode(
    reader: &mut Reader<'_, Channel>,
    item: Item<'_, Channel>,
    sink: &mut StateSink,
    tables: &mut u32,
) {
    let key = |n: u32| (n as usize + 1) as *const c_void;
    // SAFETY: see the function's contract; `Ref` pointers are alive while the
    // message is, and a `CFunction` is a C function pointer the encoder wrote.
    unsafe {
        match item {
            Item::Nil => sink.nil(),
            Item::Bool(b) => sink.boolean(b),
            Item::Int(i) => push_integer(sink.to, i),
            Item::Num(n) => sink.number(n),
            Item::Str(s) => sink.string(s),
            Item::Light(p) => sink.light(p),
            Item::CFunction(f) => {
                let f = std::mem::transmute::<usize, ffi::lua_CFunction>(f);
                sink.cfunction(f)
            }
            Item::Ref(channel) => sink.channel(channel),
            Item::Object(object) => sink.object(&**object),
            Item::BackRef(n) => {
                // A table or a function met before: either way in the cache.
                sink.function_seen(key(n));
            }
            Item::Globals => sink.globals(),
            Item::Named(name) => sink.named(name),
            Item::Function(code) => {
                let n = *tables;
                *tables += 1;
                sink.function_begin(key(n), code);
                let mut upvalue = 1;
                while let Some(item) = reader.next() {
                    match item {
                        Item::End => break,
                        Item::Join(f, m) => {
                            sink.join(upvalue, key(f), m as c_int);
                            upvalue += 1;
                        }
                        value => {
                            decode(reader, value, sink, tables);
                            sink.upvalue(upvalue);
                            upvalue += 1;
                        }
                    }
                }
            }
            Item::Join(..) => {}
            Item::Table(narr) => {
                let n = *tables;
                *tables += 1;
                sink.table_begin(key(n), c_int::try_from(narr).unwrap_or(0));
                while let Some(k) = reader.next() {
                    if matches!(k, Item::End) {
                        break;
                    }
                    decode(reader, k, sink, tables);
                    if let Some(v) = reader.next() {
                        decode(reader, v, sink, tables);
                    }
                    sink.table_entry();
                }
                sink.table_end();
            }
            Item::End => {}
        }
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

// ---------------------------------------------------------------------------------
// Functions

/// Registry key of a state's table of C function names: function → `module\0field`
/// for each C function in its loaded modules (`package.loaded`).
static NAMES_KEY: u8 = 0;

/// Looks up the names of the C functions in `l`'s loaded modules (`math.floor`,
/// `_G.require`), so that a copy can carry one that has no plain pointer to carry,
/// and keeps them in `l`'s registry (weak keys). Called when a copy met such a
/// function: the modules loaded by then are all there.
///
/// # Safety
/// `l` is valid and used by this thread only, in a frame owning nothing that a raise
/// could skip: this runs a protected call on `l` (its hooks and finalizers may run).
pub unsafe fn c_function_names(l: RawState) {
    let mut body = |l: RawState| -> c_int {
        // SAFETY: protected on `l`; raw table operations only, so no metamethod of
        // the user's runs. An allocation's finalizer may, and can replace any slot of
        // this frame (`debug.setlocal`): every slot is checked to be a table after the
        // last allocation before a raw call on it (a bad key makes `lua_next` raise,
        // which stops here).
        unsafe {
            ffi::lua_newtable(l); // 1: names
            ffi::lua_newtable(l); // 2: its metatable
            ffi::lua_pushstring(l, c"k".as_ptr());
            ffi::lua_setfield(l, 2, c"__mode".as_ptr());
            expect_table(l, 1);
            expect_table(l, 2);
            ffi::lua_setmetatable(l, 1);
            ffi::lua_pushstring(l, c"_LOADED".as_ptr());
            ffi::lua_rawget(l, ffi::LUA_REGISTRYINDEX); // 2: package.loaded
            if ffi::lua_type(l, 2) == ffi::LUA_TTABLE {
                ffi::lua_pushnil(l);
                loop {
                    expect_table(l, 2);
                    if ffi::lua_next(l, 2) == 0 {
                        break;
                    }
                    // 3: module name, 4: module
                    if ffi::lua_type(l, 3) == ffi::LUA_TSTRING
                        && ffi::lua_type(l, 4) == ffi::LUA_TTABLE
                    {
                        ffi::lua_pushnil(l);
                        loop {
                            expect_table(l, 4);
                            if ffi::lua_next(l, 4) == 0 {
                                break;
                            }
                            // 5: field, 6: value
                            if ffi::lua_type(l, 5) == ffi::LUA_TSTRING
                                && ffi::lua_iscfunction(l, 6) != 0
                            {
                                ffi::lua_pushvalue(l, 6);
                                expect_table(l, 1);
                                ffi::lua_rawget(l, 1);
                                let known = ffi::lua_type(l, -1) != ffi::LUA_TNIL;
                                ffi::lua_settop(l, 6);
                                if !known {
                                    ffi::lua_pushvalue(l, 6);
                                    ffi::lua_pushvalue(l, 3);
                                    ffi::lua_pushlstring(l, c"".as_ptr(), 1);
                                    ffi::lua_pushvalue(l, 5);
                                    ffi::lua_concat(l, 3);
                                    expect_table(l, 1);
                                    ffi::lua_rawset(l, 1);
                                }
                            }
                            ffi::lua_settop(l, 5);
                        }
                    }
                    ffi::lua_settop(l, 3);
                }
            }
            ffi::lua_settop(l, 1);
            registry_set(l, &NAMES_KEY);
        }
        0
    };
    // SAFETY: see the function's contract; `protected` needs two free slots, which
    // every caller's frame has (a C function gets LUA_MINSTACK); the body owns
    // nothing and does not panic.
    unsafe { protected(l, 0, 0, &mut body) };
}

/// Registry key of a state's table of the bytecode of functions it copied more than
/// once: weak keys, the functions; values, `true` after the first copy and a
/// [`Bytecode`] block from the second on. A closure's bytecode never changes (the
/// debug library changes upvalues, not code), so a function submitted to a pool in a
/// loop is dumped twice, not once per task: on 5.5 each dump also leaves a table of
/// garbage in the source state, and a loop of submits ran at half the speed of a loop
/// of source strings.
static DUMPS: u8 = 0;

/// The head of a userdata block in [`DUMPS`]: the bytecode follows it. The table is in
/// the registry, where Lua code with `debug` can reach it and put any value under any
/// function; only a block that this library made, for a function at the address of
/// the one being copied, is used. So no planted string or foreign userdata is ever
/// loaded as bytecode, and a live function's block is never used for another one.
///
/// What the head cannot tell: that the function it was made for has died. Lua code
/// that keeps a block after its function is collected, and plants it under a new
/// function the allocator put at the same address, has the dead function's code
/// shipped for the new one. That code is still bytecode this library dumped in this
/// state, with the new function's upvalues set by index (`lua_setupvalue` checks it),
/// so the worst is a Lua error in the task, never a crash; and the same code could
/// have submitted the dead function itself.
#[repr(C)]
struct Bytecode {
    /// The address of [`DUMPS`]: Lua code cannot write a userdata's memory, so a block
    /// that starts with it was made by `remember_function`.
    tag: *const u8,
    /// `lua_topointer` of the function it was dumped from, which stays its own while
    /// the function lives (the table's keys are weak: a collected function's entry
    /// goes with it).
    function: *const c_void,
}
const BYTECODE_HEAD: usize = std::mem::size_of::<Bytecode>();

/// What [`DUMPS`] has for a function.
enum Remembered<'a> {
    Nothing,
    Seen,
    Bytecode(&'a [u8]),
}

/// Looks the function at `from[idx]` up in [`DUMPS`]. The bytes are the block's in
/// the table, alive while the function is (it is on the stack) and no Lua code runs.
///
/// # Safety
/// `from` is valid with two free slots. Raises nothing, allocates nothing.
unsafe fn remembered<'a>(from: RawState, idx: c_int) -> Remembered<'a> {
    // SAFETY: see the function's contract; raw gets do not allocate.
    unsafe {
        let idx = ffi::lua_absindex(from, idx);
        let top = ffi::lua_gettop(from);
        let mut found = Remembered::Nothing;
        if registry_get(from, &DUMPS) == ffi::LUA_TTABLE {
            ffi::lua_pushvalue(from, idx);
            ffi::lua_rawget(from, -2);
            found = match ffi::lua_type(from, -1) {
                ffi::LUA_TUSERDATA => {
                    // The size check comes before the head is read, so the read stays
                    // inside the block whatever library made it.
                    let size = ffi::lua_rawlen(from, -1) as usize;
                    let block = ffi::lua_touserdata(from, -1) as *const Bytecode;
                    if size > BYTECODE_HEAD
                        && std::ptr::eq((*block).tag, &DUMPS)
                        && std::ptr::eq((*block).function, ffi::lua_topointer(from, idx))
                    {
                        let code = block.cast::<u8>().add(BYTECODE_HEAD);
                        Remembered::Bytecode(std::slice::from_raw_parts(code, size - BYTECODE_HEAD))
                    } else {
                        Remembered::Seen
                    }
                }
                ffi::LUA_TNIL => Remembered::Nothing,
                _ => Remembered::Seen,
            };
        }
        ffi::lua_settop(from, top);
        found
    }
}

/// Notes in [`DUMPS`] that the Lua function at `l[idx]` is being copied: the first
/// time as seen, the second time with its bytecode, for later copies to reuse. A
/// failure (out of memory) leaves the table as it was: the copy dumps as before.
/// Only functions copied twice take a string, so a new closure per copy costs a
/// table slot, not a second copy of its bytecode.
///
/// # Safety
/// `l` is valid and used by this thread only, in a frame owning nothing: this runs a
/// protected call on `l`, so its hooks and finalizers may run (and change any value
/// of the caller's frame).
pub unsafe fn remember_function(l: RawState, idx: c_int) {
    // SAFETY: an index conversion.
    let idx = unsafe { ffi::lua_absindex(l, idx) };
    // SAFETY: see the function's contract; type and raw reads, `reserve` (never
    // raises), and the dump, outside the protected call so that a raise there could
    // not skip `code`.
    let code = unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TFUNCTION
            || ffi::lua_iscfunction(l, idx) != 0
            || reserve(l, 4).is_err()
        {
            return;
        }
        let code = match remembered(l, idx) {
            Remembered::Bytecode(_) => return,
            Remembered::Nothing => None,
            Remembered::Seen => {
                let mut code = Vec::new();
                if !dump_now(l, idx, &mut code) {
                    return;
                }
                Some(code)
            }
        };
        code
    };
    // SAFETY: `reserve` made the room.
    let top = unsafe { ffi::lua_gettop(l) };
    // SAFETY: as above.
    unsafe { ffi::lua_pushvalue(l, idx) };
    let mut body = |l: RawState| -> c_int {
        // SAFETY: protected on `l`, the function its one argument; the body owns
        // nothing (`code` is the caller's).
        unsafe {
            if registry_get(l, &DUMPS) != ffi::LUA_TTABLE {
                ffi::lua_pop(l, 1);
                ffi::lua_newtable(l);
                ffi::lua_newtable(l);
                ffi::lua_pushstring(l, c"k".as_ptr());
                ffi::lua_setfield(l, -2, c"__mode".as_ptr());
                ffi::lua_setmetatable(l, -2);
                ffi::lua_pushvalue(l, -1);
                registry_set(l, &DUMPS);
            }
            ffi::lua_pushvalue(l, 1);
            match &code {
                Some(code) => {
                    let block = ffi::lua_newuserdata(l, BYTECODE_HEAD + code.len());
                    let head = Bytecode {
                        tag: &DUMPS,
                        function: ffi::lua_topointer(l, 1),
                    };
                    // `lua_newuserdata` returned a block of that size (it raises
                    // otherwise), aligned for any C object.
                    std::ptr::write(block as *mut Bytecode, head);
                    let bytes = block.cast::<u8>().add(BYTECODE_HEAD);
                    std::ptr::copy_nonoverlapping(code.as_ptr(), bytes, code.len());
                }
                None => ffi::lua_pushboolean(l, 1),
            }
            ffi::lua_rawset(l, -3);
        }
        0
    };
    // SAFETY: the function is on top and `reserve` made the room; the body owns
    // nothing and does not panic. A failure leaves the table as it was, and its error
    // goes with the stack reset.
    unsafe {
        protected(l, 1, 0, &mut body);
        ffi::lua_settop(l, top);
    }
}

/// Dumps the Lua function at `from[idx]` into `buf` (debug information kept, so a
/// copy's errors name its source and lines), or takes the bytecode [`DUMPS`] keeps
/// for it. `false` when Lua refuses.
///
/// # Safety
/// `from` is valid with two free slots; `from[idx]` is a Lua function. Raises nothing.
unsafe fn dump(from: RawState, idx: c_int, buf: &mut Vec<u8>) -> bool {
    // SAFETY: see the function's contract.
    if let Remembered::Bytecode(code) = unsafe { remembered(from, idx) } {
        buf.clear();
        if buf.try_reserve(code.len()).is_err() {
            return false;
        }
        buf.extend_from_slice(code);
        return true;
    }
    // SAFETY: the same contract.
    unsafe { dump_now(from, idx, buf) }
}

/// [`dump`] by `lua_dump`.
///
/// # Safety
/// As for [`dump`].
unsafe fn dump_now(from: RawState, idx: c_int, buf: &mut Vec<u8>) -> bool {
    /// # Safety
    /// Called by `lua_dump` with `ud` the `Vec<u8>` given to it.
    unsafe extern "C-unwind" fn write(
        _: RawState,
        p: *const c_void,
        size: usize,
        ud: *mut c_void,
    ) -> c_int {
        // SAFETY: see the function's contract; `p` holds `size` bytes. No panic can
        // unwind into Lua from here: a failed reservation is reported to Lua instead.
        unsafe {
            // 5.5 (and 5.1/5.2 for some functions) end a dump with an empty block
            // whose pointer is null: no slice may be made of it.
            if size == 0 || p.is_null() {
                return 0;
            }
            let buf = &mut *(ud as *mut Vec<u8>);
            if buf.try_reserve(size).is_err() {
                return 1;
            }
            buf.extend_from_slice(std::slice::from_raw_parts(p.cast::<u8>(), size));
        }
        0
    }
    buf.clear();
    // SAFETY: see the function's contract. PUC Lua's dump up to 5.4 does not allocate
    // in the state; 5.5's does, with the limit lifted so it cannot fail on it (and
    // runs no collector step); LuaJIT's runs under its own protected call and reports
    // failure.
    unsafe {
        let top = ffi::lua_gettop(from);
        ffi::lua_pushvalue(from, idx);
        let ud = buf as *mut Vec<u8> as *mut c_void;
        // 5.5's dump allocates in `from` (see `state::unbounded`) and pushes one value
        // (within the level's room).
        #[cfg(feature = "lua55")]
        let status = crate::state::unbounded(from, || ffi::lua_dump(from, write, ud, 0));
        #[cfg(not(feature = "lua55"))]
        let status = ffi::lua_dump(from, write, ud, 0);
        ffi::lua_settop(from, top);
        status == 0
    }
}

/// How many upvalues the Lua function at `from[idx]` has.
///
/// # Safety
/// `from` is valid with a free slot; `from[idx]` is a function. Never raises.
#[cfg(feature = "lua51")]
unsafe fn upvalue_count(from: RawState, idx: c_int) -> c_int {
    // SAFETY: see the function's contract; "u" reads a field, allocating nothing.
    unsafe {
        let mut ar: ffi::lua_Debug = std::mem::zeroed();
        ffi::lua_pushvalue(from, idx);
        if ffi::lua_getinfo(from, c">u".as_ptr(), &mut ar) == 0 {
            return 0;
        }
        ar.nups as c_int
    }
}

/// Why the value at `from[idx]` cannot be copied, where functions can.
///
/// # Safety
/// `from` is valid. Never raises.
unsafe fn refusal(from: RawState, idx: c_int) -> &'static str {
    // SAFETY: type reads only.
    match unsafe { ffi::lua_type(from, idx) } {
        ffi::LUA_TUSERDATA => "a userdata cannot be copied",
        ffi::LUA_TTHREAD => "a coroutine cannot be copied",
        ffi::LUA_TFUNCTION if unsafe { ffi::lua_iscfunction(from, idx) } != 0 => {
            "a C function with upvalues, found in no loaded module, cannot be copied"
        }
        ffi::LUA_TFUNCTION => "a function that Lua cannot dump cannot be copied",
        _ => "this value cannot be copied",
    }
}

/// Raises on `to` unless the value at `idx` is a Lua function (see [`expect_table`]:
/// the calls on it that follow are unchecked by Lua).
///
/// # Safety
/// Inside a protected call on `to`; `idx` is a valid index.
unsafe fn expect_lua_function(to: RawState, idx: c_int) {
    // SAFETY: see the function's contract.
    unsafe {
        if ffi::lua_type(to, idx) != ffi::LUA_TFUNCTION || ffi::lua_iscfunction(to, idx) != 0 {
            tampered(to);
        }
    }
}

/// Whether the function at `idx` has an upvalue `n`.
///
/// # Safety
/// `to` is valid with a free slot; `idx` holds a function. Never raises.
#[cfg(not(feature = "lua51"))]
unsafe fn has_upvalue(to: RawState, idx: c_int, n: c_int) -> bool {
    // SAFETY: see the function's contract; the pushed upvalue is popped at once.
    unsafe {
        if ffi::lua_getupvalue(to, idx, n).is_null() {
            return false;
        }
        ffi::lua_settop(to, -2);
    }
    true
}

/// Raises the error for a copy whose values Lua code changed.
///
/// # Safety
/// Inside a protected call on `to`.
unsafe fn tampered(to: RawState) -> ! {
    // SAFETY: see the function's contract; the message is static.
    unsafe {
        ffi::lua_pushstring(to, TAMPERED.as_ptr());
        ffi::lua_error(to)
    }
}

/// The error for a copy whose values Lua code changed while it ran.
const TAMPERED: &CStr = c"llthreads: a copy in progress was changed by Lua code";
