//! Copying values out of a Lua state: into another state, directly, or into a channel
//! message, which is later written into a state by the same writer.
//!
//! One traversal (the [`Copier`]) reads the source state and writes what it finds to a
//! [`Sink`]: a target state ([`StateSink`]) or a message encoder. Decoding a message
//! drives the same [`StateSink`], so the three directions (state to state, state to
//! message, message to state) share their rules: cycles, the depth limit, unsupported
//! values, and channels, which are copied as the same channel.
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

use crate::channel::{Channel, Msg};
use crate::handle;
use crate::message::{Encoder, Item, Reader, View};
use crate::pin;
use crate::raw::{protected, push_bytes, RawState};

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
    // which keeps sending numbers and strings cheap.
    // SAFETY: type reads only.
    if !(first..=last).any(|i| unsafe { ffi::lua_type(l, i) } == ffi::LUA_TTABLE) {
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
    /// The placeholder for an unsupported value in results.
    unsafe fn describe(&mut self, tname: *const c_char, p: *const c_void);
    /// Starts the table known to the source as `key`. Returns `true` when that table
    /// was met before in this copy: its copy is written again and nothing follows.
    /// Otherwise its entries follow, each as key, value, [`Sink::table_entry`], then
    /// [`Sink::table_end`].
    unsafe fn table_begin(&mut self, key: *const c_void, narr: c_int) -> bool;
    unsafe fn table_entry(&mut self);
    unsafe fn table_end(&mut self);
}

/// Writes onto a target state's stack. Tables met more than once become one table in
/// the copy (cycles survive), through a cache table kept in a stack slot below the
/// values.
struct StateSink {
    to: RawState,
    /// Target index of the table mapping source table keys to their copies.
    cache: c_int,
    has_cache: bool,
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
    unsafe fn describe(&mut self, tname: *const c_char, p: *const c_void) {
        // SAFETY: `tname` is a static type name; the push may raise (allowed).
        unsafe {
            ffi::lua_pushfstring(self.to, c"Un-supported value: %s: %p".as_ptr(), tname, p);
        }
    }
    unsafe fn table_begin(&mut self, key: *const c_void, narr: c_int) -> bool {
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
            ffi::lua_pushlightuserdata(to, key as *mut c_void);
            ffi::lua_rawget(to, self.cache);
            if ffi::lua_type(to, -1) != ffi::LUA_TNIL {
                return true;
            }
            ffi::lua_settop(to, -2);
            ffi::lua_createtable(to, narr, 0);
            ffi::lua_pushlightuserdata(to, key as *mut c_void);
            ffi::lua_pushvalue(to, -2);
            // Again: creating the table may have run a finalizer.
            expect_table(to, self.cache);
            ffi::lua_rawset(to, self.cache);
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
}

/// One traversal of source values, written to a sink.
struct Copier<'s, S: Sink> {
    from: RawState,
    /// Table levels the source has room for (see [`prepare_source`]); used on 5.1 and
    /// LuaJIT only, where making room mid-copy could run Lua code.
    levels: c_int,
    sink: &'s mut S,
    unsupported: Unsupported,
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
    levels: c_int,
) -> Result<c_int, CopyError> {
    let count = count(first, last);
    // SAFETY: raising on `to` is allowed (reason 1).
    let mut sink = unsafe { StateSink::new(to, count) };
    let mut copier = Copier {
        from,
        sink: &mut sink,
        unsupported,
        top_level: 0,
        levels,
    };
    for idx in first..=last {
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
    unsupported: Unsupported,
    levels: c_int,
) -> Result<c_int, Failure> {
    let mut refused = None;
    let mut body = |to: RawState| -> c_int {
        // SAFETY: protected on `to` (contract reason 1); `from` is only read (reason 2).
        match unsafe { copy_values(from, to, first, last, unsupported, levels) } {
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

/// Raises on `to` unless the value at `idx` is a table. The copy keeps its cache and
/// the tables it fills in stack slots, and Lua code that runs meanwhile (a finalizer
/// run by an allocation, a hook) can replace them with `debug.setlocal`: a raw table
/// call on what is no longer a table would crash the process.
///
/// # Safety
/// Inside a protected call on `to`; `idx` is a valid index.
unsafe fn expect_table(to: RawState, idx: c_int) {
    // SAFETY: see the function's contract; the message is static.
    unsafe {
        if ffi::lua_type(to, idx) != ffi::LUA_TTABLE {
            ffi::lua_pushstring(
                to,
                c"llthreads: a copy in progress was changed by Lua code".as_ptr(),
            );
            ffi::lua_error(to);
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
                ffi::LUA_TTABLE => self.table(idx, depth)?,
                ffi::LUA_TFUNCTION if plain_c_function(from, idx) => {
                    if let Some(f) = ffi::lua_tocfunction(from, idx) {
                        // The copy must outlive the state that loaded its module.
                        pin::library_of(f as *const c_void);
                        self.sink.cfunction(f);
                    }
                }
                ffi::LUA_TUSERDATA => {
                    let channel = handle::channel_at(from, idx);
                    if channel.is_null() {
                        self.unsupported(idx)?
                    } else {
                        self.sink.channel(channel)
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
        match self.unsupported {
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

/// Copies `from[idx]` into a new message, by the rules of arguments to `new`
/// (unsupported values are refused). Raises nothing. `buffer(len)` gives the buffer
/// for a message of `len` bytes (0 when not known beforehand).
///
/// # Safety
/// `from` is a valid state used by this thread only, with at least [`SOURCE_SLOTS`]
/// free stack slots; `idx` is an absolute index of a value in it.
pub unsafe fn encode(
    from: RawState,
    idx: c_int,
    buffer: &mut dyn FnMut(usize) -> Vec<u8>,
    levels: c_int,
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
        let mut encoder = Encoder::with_buffer(buffer(0));
        let mut copier = Copier {
            from,
            sink: &mut encoder,
            unsupported: Unsupported::Refuse,
            top_level: idx,
            levels,
        };
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
            unsafe { write_view(to, view) };
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

/// Writes a message's value onto `to`, through the state sink for encoded values.
///
/// # Safety
/// Protected on `to` (may raise); the message that `view` borrows is alive.
unsafe fn write_view(to: RawState, view: View<'_, Channel>) {
    // SAFETY: see the function's contract.
    unsafe {
        match view {
            View::Bool(b) => ffi::lua_pushboolean(to, b as c_int),
            View::Num(n) => ffi::lua_pushnumber(to, n),
            View::Int(i) => push_integer(to, i),
            View::Str(s) => push_bytes(to, s),
            View::Encoded(mut reader) => {
                let mut sink = StateSink::new(to, 1);
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
            Item::BackRef(n) => {
                sink.table_begin(key(n), 0);
            }
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
