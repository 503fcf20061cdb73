//! Process-wide objects other than channels that Lua values in several states stand
//! for: today a task pool. A copy of such a value (an argument, an upvalue, a message,
//! a result) is a new handle of the same object in the target state.
//!
//! The copier and messages know only this trait; the module that makes the Lua values
//! (`api_pool`) implements it and tells the copier how to recognise its values
//! ([`set_finder`]). So the copier sits below the Lua-facing API, not beside it.

use std::ffi::c_int;
use std::sync::OnceLock;

use crate::raw::RawState;

pub trait Object: Send + Sync {
    /// What a message holds for this object while it waits: as much of the object
    /// as the handle it was copied from kept alive.
    fn carry(&self) -> Box<dyn Object>;

    /// Pushes a new handle of the object onto `l`.
    ///
    /// # Safety
    /// `l` is valid and used by this thread only, inside a protected call (this may
    /// raise: it allocates), with four free slots; the caller owns nothing a raise
    /// would skip.
    unsafe fn push(&self, l: RawState);
}

/// Finds the object a Lua value stands for: the object behind the value at `idx`, or
/// `None` for any other value. The object stays valid while the value is reachable
/// and no Lua code runs in `l`.
pub type Finder = unsafe fn(l: RawState, idx: c_int) -> Option<*const dyn Object>;

static FINDER: OnceLock<Finder> = OnceLock::new();

/// Installs the finder (once per process and library copy; later calls change
/// nothing).
pub fn set_finder(finder: Finder) {
    let _ = FINDER.set(finder);
}

/// The object behind the value at `idx`, if it stands for one.
///
/// # Safety
/// `l` is valid with two free slots. Never raises.
pub unsafe fn at(l: RawState, idx: c_int) -> Option<*const dyn Object> {
    let finder = FINDER.get()?;
    // SAFETY: the finder's contract is this function's.
    unsafe { finder(l, idx) }
}
