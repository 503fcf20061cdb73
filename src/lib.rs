//! `llthreads`: run Lua code on native OS threads, each thread with its own fresh Lua
//! state. A drop-in replacement for the C module lua-llthreads2, loadable as
//! `llthreads`, `llthreads2`, `llthreads.ex` and `llthreads2.ex` from one file.
//!
//! Data flows one way: the Lua-facing API ([`api`]) builds a child state ([`state`]),
//! copying the arguments into it ([`copy`]); the parent-side object ([`thread`]) starts
//! the child runtime ([`child`]) on an OS thread and shares a [`record`] with it; `join`
//! copies the results back. Raw Lua calls that can raise are confined to [`raw`].
//!
//! Threads talk through channels ([`channel`]): messages ([`message`]) live outside
//! every state; a channel in a state is a userdata ([`handle`]); every wait of ours
//! goes through [`wait`], so `interrupt()` can wake it.
//!
//! Dependencies run one way, from the leaves up: [`names`], [`diag`], [`barrier`],
//! [`wait`] → [`pool`], [`raw`] → [`object`] → [`message`] → [`channel`] → [`handle`] → [`state`],
//! [`copy`], [`errors`] → [`interrupt`] → [`coroutine`], [`record`] → [`prepared`],
//! [`child`] → [`thread`], [`taskpool`] → [`select`] → [`api`] → [`api_spawn`] →
//! [`api_pool`] → [`api_channel`], [`ex`].
//!
//! No Rust panic reaches Lua: entry points catch panics of their work and raise them
//! as Lua errors; anywhere else a panic aborts with a message ([`barrier`]). The
//! library is linked with `-z nodelete` (see `build.rs`): once loaded it stays mapped,
//! so a detached child can go on running its code after the host unloaded the module.

#![warn(unsafe_op_in_unsafe_fn)]
// Errors carry their message inline (`names::Text`, 256 bytes) rather than on the heap:
// a Lua error raised while a heap value is alive in a Rust frame would leak it, and
// the copier's and the entry points' errors end in exactly such a raise. So the
// error types are large on purpose.
#![allow(clippy::result_large_err, clippy::large_enum_variant)]

#[cfg(not(any(
    feature = "lua51",
    feature = "lua52",
    feature = "lua53",
    feature = "lua54",
    feature = "lua55",
    feature = "luajit"
)))]
compile_error!(
    "enable exactly one Lua flavour feature: lua51, lua52, lua53, lua54, lua55 or luajit"
);

mod api;
mod api_channel;
mod api_pool;
mod api_spawn;
mod barrier;
mod channel;
mod child;
mod copy;
mod coroutine;
mod diag;
mod errors;
mod ex;
mod handle;
mod heap;
mod interrupt;
mod message;
mod names;
mod object;
mod pin;
mod pool;
mod prepared;
mod raw;
mod record;
mod select;
mod slot;
mod state;
mod taskpool;
mod thread;
mod wait;

use std::ffi::c_int;

use crate::names::Module;
use crate::raw::RawState;

/// `require "llthreads"`.
///
/// # Safety
/// Called by Lua's `require` with a valid state.
#[no_mangle]
pub unsafe extern "C-unwind" fn luaopen_llthreads(l: RawState) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { api_channel::open(l, Module::Llthreads) }
}

/// `require "llthreads2"`.
///
/// # Safety
/// Called by Lua's `require` with a valid state.
#[no_mangle]
pub unsafe extern "C-unwind" fn luaopen_llthreads2(l: RawState) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { api_channel::open(l, Module::Llthreads2) }
}

/// `require "llthreads.ex"`.
///
/// # Safety
/// Called by Lua's `require` with a valid state.
#[no_mangle]
pub unsafe extern "C-unwind" fn luaopen_llthreads_ex(l: RawState) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { ex::open(l, c"llthreads") }
}

/// `require "llthreads2.ex"`.
///
/// # Safety
/// Called by Lua's `require` with a valid state.
#[no_mangle]
pub unsafe extern "C-unwind" fn luaopen_llthreads2_ex(l: RawState) -> c_int {
    // SAFETY: forwarded contract.
    unsafe { ex::open(l, c"llthreads2") }
}
