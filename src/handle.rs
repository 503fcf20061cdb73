//! Channels as Lua values: a full userdata holding one strong reference to the
//! [`Channel`], with the channel metatable.
//!
//! Within one state a channel is always the same userdata (so `==` holds and it can
//! key a table): each state keeps a weak-valued cache in its registry, keyed by the
//! channel's address. The copier (`copy.rs`) recognises channels in a source state
//! with [`channel_at`] and pushes them into a target state with [`push`]; the
//! methods, which need the copier and the interrupt machinery above it, are given to
//! this module by the API when the module is opened ([`set_methods`]).

use std::ffi::{c_int, c_void, CStr};
use std::sync::{Arc, OnceLock};

use mlua::ffi;

use crate::channel::Channel;
use crate::raw::{registry_get, registry_set, RawState};

/// The block of a channel userdata. The tag tells ours from another library's
/// userdata of the same size that Lua code gave our metatable (`debug.setmetatable`).
#[repr(C)]
struct Slot {
    /// Always the address of this library copy's `METATABLE_KEY`.
    tag: *const u8,
    /// From `Arc::into_raw`; null once collected.
    channel: *const Channel,
}

/// Registry keys (light userdata; one per copy of this library, like the thread
/// metatable's).
static METATABLE_KEY: u8 = 0;
static CACHE_KEY: u8 = 0;

/// Functions of the channel metatable: names starting with `__` are metamethods,
/// the others methods (its `__index`).
pub type Methods = &'static [(&'static CStr, ffi::lua_CFunction)];

static METHODS: OnceLock<Methods> = OnceLock::new();

/// Gives this module the channel methods. Called when the module is opened, before
/// any channel exists (a channel is only made through the module's functions).
pub fn set_methods(methods: Methods) {
    let _ = METHODS.set(methods);
}

/// The slot of our channel userdata at `idx`, or null for any other value.
///
/// The tag alone tells ours: only [`push`] writes this copy's `METATABLE_KEY`
/// address into a block, and Lua code cannot write into a userdata. The metatable is
/// not compared: that took a registry lookup on every send and receive (a quarter of
/// the time of a one-number message), and tells nothing the tag does not. A channel
/// that Lua code gave another metatable is still the channel; a block whose `__gc`
/// ran has a null channel and is refused by the callers.
///
/// # Safety
/// Valid state; never raises.
unsafe fn slot_at(l: RawState, idx: c_int) -> *mut Slot {
    // SAFETY: see the function's contract. The size check comes before the tag is
    // read, so the read stays inside the block whatever made it.
    unsafe {
        if ffi::lua_type(l, idx) != ffi::LUA_TUSERDATA
            || ffi::lua_rawlen(l, idx) as usize != std::mem::size_of::<Slot>()
        {
            return std::ptr::null_mut();
        }
        let slot = ffi::lua_touserdata(l, idx) as *mut Slot;
        if std::ptr::eq((*slot).tag, &METATABLE_KEY) {
            slot
        } else {
            std::ptr::null_mut()
        }
    }
}

/// The channel at `idx`, or null when the value is not a channel of ours (or one
/// whose `__gc` already ran). The pointer stays valid while the value is reachable
/// and no Lua code has run since (which could call `__gc` by hand).
///
/// # Safety
/// Valid state with two free slots; never raises.
pub unsafe fn channel_at(l: RawState, idx: c_int) -> *const Channel {
    // SAFETY: forwarded contract; a non-null slot is our block.
    unsafe {
        let slot = slot_at(l, idx);
        if slot.is_null() {
            std::ptr::null()
        } else {
            (*slot).channel
        }
    }
}

/// Pushes the userdata of `channel` in `l`: the one this state already has, or a new
/// one holding a new strong reference.
///
/// # Safety
/// 1. `channel` is alive (a strong reference is held elsewhere for this call).
/// 2. Raising is allowed (allocation): nothing owned in the frames it would cross.
pub unsafe fn push(l: RawState, channel: *const Channel) {
    let key = channel as *mut c_void;
    // SAFETY: see the function's contract. Every userdata gets its metatable (with
    // `__gc`) before it holds a reference, so a raise after that leaves the reference
    // to the collector, never leaked.
    unsafe {
        ffi::luaL_checkstack(l, 6, c"no room to push a channel".as_ptr());
        if registry_get(l, &CACHE_KEY) != ffi::LUA_TTABLE {
            ffi::lua_settop(l, -2);
            ffi::lua_createtable(l, 0, 4);
            ffi::lua_createtable(l, 0, 1);
            ffi::lua_pushstring(l, c"v".as_ptr());
            ffi::lua_setfield(l, -2, c"__mode".as_ptr());
            ffi::lua_setmetatable(l, -2);
            ffi::lua_pushvalue(l, -1);
            registry_set(l, &CACHE_KEY);
        }
        // [cache]
        ffi::lua_pushlightuserdata(l, key);
        ffi::lua_rawget(l, -2);
        if channel_at(l, -1) == channel {
            ffi::lua_replace(l, -2);
            return;
        }
        ffi::lua_settop(l, -2);
        let slot = ffi::lua_newuserdata(l, std::mem::size_of::<Slot>()) as *mut Slot;
        slot.write(Slot {
            tag: &METATABLE_KEY,
            channel: std::ptr::null(),
        });
        ensure_metatable(l);
        ffi::lua_setmetatable(l, -2);
        Arc::increment_strong_count(channel);
        (*slot).channel = channel;
        // [cache, userdata]
        ffi::lua_pushlightuserdata(l, key);
        ffi::lua_pushvalue(l, -2);
        ffi::lua_rawset(l, -4);
        ffi::lua_replace(l, -2);
    }
}

/// Pushes the channel metatable, creating it in this state's registry if needed.
///
/// # Safety
/// Raising allowed, nothing owned; four free slots.
unsafe fn ensure_metatable(l: RawState) {
    // SAFETY: see the function's contract.
    unsafe {
        if registry_get(l, &METATABLE_KEY) == ffi::LUA_TTABLE {
            return;
        }
        ffi::lua_settop(l, -2);
        ffi::lua_createtable(l, 0, 6);
        ffi::lua_createtable(l, 0, 8);
        for (name, f) in METHODS.get().copied().unwrap_or(&[]) {
            ffi::lua_pushcfunction(l, *f);
            let target = if name.to_bytes().starts_with(b"__") {
                -3
            } else {
                -2
            };
            ffi::lua_setfield(l, target, name.as_ptr());
        }
        ffi::lua_setfield(l, -2, c"__index".as_ptr());
        ffi::lua_pushcfunction(l, l_gc);
        ffi::lua_setfield(l, -2, c"__gc".as_ptr());
        ffi::lua_pushcfunction(l, l_tostring);
        ffi::lua_setfield(l, -2, c"__tostring".as_ptr());
        ffi::lua_pushvalue(l, -1);
        registry_set(l, &METATABLE_KEY);
    }
}

/// `__gc`: releases the userdata's reference. Lua code can call it by hand, with
/// anything: it acts only on a channel userdata of ours, once.
unsafe extern "C-unwind" fn l_gc(l: RawState) -> c_int {
    // SAFETY: called by Lua; the slot is emptied before the reference is released,
    // so a second call finds nothing. Dropping a channel runs no Lua code.
    unsafe {
        let slot = slot_at(l, 1);
        if !slot.is_null() && !(*slot).channel.is_null() {
            let channel = std::mem::replace(&mut (*slot).channel, std::ptr::null());
            Arc::decrement_strong_count(channel);
        }
    }
    0
}

/// `__tostring`: `llthreads.channel: 0x...`, the channel's address, the same in every
/// state.
unsafe extern "C-unwind" fn l_tostring(l: RawState) -> c_int {
    // SAFETY: called by Lua; raising allowed, nothing owned.
    unsafe {
        let channel = channel_at(l, 1);
        if channel.is_null() {
            ffi::lua_pushstring(l, c"llthreads.channel: collected".as_ptr());
        } else {
            ffi::lua_pushfstring(
                l,
                c"llthreads.channel: %p".as_ptr(),
                channel as *const c_void,
            );
        }
    }
    1
}
