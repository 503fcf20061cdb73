//! The child's `coroutine.resume`, `coroutine.wrap` and (5.4) `coroutine.close`, so that
//! interrupts follow the code from coroutine to coroutine (PUC Lua only).
//!
//! On PUC Lua a hook belongs to one `lua_State`, and each coroutine is one: a hook set
//! on the chunk's state never fires while a coroutine runs. [`install`] puts these
//! functions into the child state's `coroutine` table before its chunk runs. Around
//! the moment a coroutine runs they tell the interrupt module which state is current
//! ([`interrupt::switch_to`] / [`interrupt::switch_back`]), and nothing else changes:
//! - a call that the stock function refuses or fails without running the coroutine
//!   (not a coroutine, one that cannot be resumed, too many arguments) is handed to
//!   the stock function itself, called directly from this frame, so it reports
//!   exactly as the stock one does, the function's name and the error position
//!   included;
//! - otherwise the work is the stock function's, step for step, on each version: move
//!   the arguments, `lua_resume`, move the results or the error, and for `wrap` the
//!   error's position prefix.
//!
//! Only `lua_resume` (or, on 5.4, `lua_resetthread`, on 5.5 `lua_closethread`, also
//! inside the stock `close`,
//! which past its checks does nothing else that can raise) runs between a switch and
//! its switch back, so no error can leave the interrupt module pointing at a coroutine
//! that stopped running (and could be collected). Those two can raise on their own
//! only when creating one of their fixed messages fails for lack of memory; the child
//! state interns those messages before its first switch, so creating them allocates
//! nothing.
//!
//! A coroutine resumed by C code through `lua_resume` directly is not seen: an
//! interrupt made while it runs waits until it yields back. On LuaJIT nothing is
//! replaced: its hooks are global, and reach every coroutine already.

use std::ffi::c_int;
use std::sync::OnceLock;

use mlua::ffi;

use crate::interrupt;
use crate::raw::RawState;

/// Replaces the child's coroutine functions (PUC Lua). Called by `new` while it
/// builds the child state, before any code of the chunk's exists there; leaves the
/// stack as it found it.
///
/// # Safety
/// `l` is the child's state, used by this thread only, inside a protected call (it
/// may raise), with three free stack slots.
pub unsafe fn install(l: RawState) {
    #[cfg(not(feature = "luajit"))]
    // SAFETY: forwarded contract.
    unsafe {
        puc::install(l)
    };
    // SAFETY: forwarded contract.
    unsafe { wrap_sethook(l) };
}

/// The stock `debug.sethook`, read from the first child state.
static STOCK_SETHOOK: OnceLock<Option<ffi::lua_CFunction>> = OnceLock::new();

/// Replaces the child's `debug.sethook` with [`l_sethook`], when the stock one is a
/// C function.
///
/// # Safety
/// As for [`install`].
unsafe fn wrap_sethook(l: RawState) {
    // SAFETY: see the function's contract; every push is popped.
    unsafe {
        let top = ffi::lua_gettop(l);
        ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, c"_LOADED".as_ptr());
        if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
            ffi::lua_getfield(l, -1, c"debug".as_ptr());
            if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                let stock = *STOCK_SETHOOK.get_or_init(|| {
                    ffi::lua_getfield(l, -1, c"sethook".as_ptr());
                    let f = ffi::lua_tocfunction(l, -1);
                    ffi::lua_settop(l, -2);
                    f
                });
                if stock.is_some() {
                    ffi::lua_pushcfunction(l, l_sethook);
                    ffi::lua_setfield(l, -2, c"sethook".as_ptr());
                }
            }
        }
        ffi::lua_settop(l, top);
    }
}

/// `debug.sethook(...)`: the stock function, then, when an interrupt waits for its
/// event on the state the chunk runs in, the interrupt hook goes back on, and the
/// hook just set becomes the one put back after it. (A profiler that re-arms its
/// hook from inside it would otherwise remove ours for good.)
unsafe extern "C-unwind" fn l_sethook(l: RawState) -> c_int {
    let Some(Some(stock)) = STOCK_SETHOOK.get().copied() else {
        // Not reachable: installed only once the stock function is known.
        std::process::abort()
    };
    // SAFETY: called by Lua, owning nothing: the stock function may raise its own
    // argument errors, named after this frame as they would be after its own.
    unsafe {
        let n = stock(l);
        interrupt::user_hook_set();
        n
    }
}

#[cfg(not(feature = "luajit"))]
mod puc {
    use std::ffi::{c_int, CStr};
    use std::sync::OnceLock;

    use mlua::ffi;

    use crate::interrupt;
    use crate::raw::{protected, raise_top, registry_get, registry_set, string_at, RawState};

    /// The stock functions, the same for every state of the process (they live in the
    /// one Lua library the host links), read from the first child state.
    struct Stock {
        resume: ffi::lua_CFunction,
        create: ffi::lua_CFunction,
        /// The C function of the closures the stock `coroutine.wrap` returns.
        auxwrap: ffi::lua_CFunction,
        #[cfg(any(feature = "lua54", feature = "lua55"))]
        close: ffi::lua_CFunction,
    }

    static STOCK: OnceLock<Stock> = OnceLock::new();

    /// Registry key of the child's interned messages (see the module comment).
    static INTERNED_KEY: u8 = 0;

    /// Messages `lua_resume` / `lua_resetthread` create by themselves. The last two are
    /// the refusals the stock functions leave to `lua_resume` (5.3, 5.4, 5.5: created
    /// in the coroutine outside any protected call; for a dead one, whose error has no
    /// handler, an allocation failure there is rethrown in the main coroutine, past
    /// every switch back of the coroutines that resumed the caller). 5.1's stock resume
    /// refuses in the caller and 5.2's inside a protected call: an ordinary error.
    const INTERNED: [&CStr; 4] = [
        c"C stack overflow",
        c"error in error handling",
        c"cannot resume dead coroutine",
        c"cannot resume non-suspended coroutine",
    ];

    #[cfg(feature = "lua51")]
    unsafe extern "C-unwind" {
        /// Lua 5.1's way to pass the C-call depth on to a coroutine before resuming it,
        /// as the stock `coroutine.resume` does.
        fn lua_setlevel(from: RawState, to: RawState);
    }

    /// Keeps the messages `lua_resume` may create interned in `l`'s registry.
    ///
    /// # Safety
    /// Raising allowed (it allocates), nothing owned; three free slots.
    unsafe fn intern(l: RawState) {
        // SAFETY: see the function's contract.
        unsafe {
            ffi::lua_createtable(l, INTERNED.len() as c_int, 0);
            for (i, s) in INTERNED.iter().enumerate() {
                ffi::lua_pushstring(l, s.as_ptr());
                ffi::lua_rawseti(l, -2, (i + 1) as _);
            }
            registry_set(l, &INTERNED_KEY);
        }
    }

    /// Makes sure the interned messages are there before a switch. They are made on
    /// the first switch, not when the state is built: a chunk that never runs a
    /// coroutine does not pay for them (about 0.2 KiB per thread). Lua code can reach
    /// the registry and drop them, so they are checked every time: without them
    /// `lua_resume` would have to create one, which under a memory limit can fail
    /// with an error thrown past the switch back (it goes to the main coroutine),
    /// leaving the interrupt machinery pointing at a coroutine that may be collected.
    /// Returns false, with the error on top of `l`, when interning failed (out of
    /// memory); nothing is switched then.
    ///
    /// # Safety
    /// Called from a C function Lua called on `l`, owning nothing; three free slots.
    unsafe fn keep_interned(l: RawState) -> bool {
        // SAFETY: raw reads with a light userdata key and integer keys allocate
        // nothing; every push is popped.
        let intact = unsafe {
            let top = ffi::lua_gettop(l);
            let mut intact = registry_get(l, &INTERNED_KEY) == ffi::LUA_TTABLE;
            for (i, s) in INTERNED.iter().enumerate() {
                if !intact {
                    break;
                }
                ffi::lua_rawgeti(l, top + 1, (i + 1) as _);
                intact = string_at(l, -1) == Some(s.to_bytes());
                ffi::lua_settop(l, -2);
            }
            ffi::lua_settop(l, top);
            intact
        };
        if intact {
            return true;
        }
        let mut body = |l: RawState| -> c_int {
            // SAFETY: protected on `l`, where raising is allowed.
            unsafe { intern(l) };
            0
        };
        // SAFETY: (1) three free slots, two of which `protected` needs; (2) the body
        // owns nothing and does not panic. On failure the error object is pushed.
        unsafe { protected(l, 0, 0, &mut body) == ffi::LUA_OK }
    }

    /// # Safety
    /// As for [`super::install`].
    pub(super) unsafe fn install(l: RawState) {
        // SAFETY: see the function's contract; every push is popped before returning.
        unsafe {
            let top = ffi::lua_gettop(l);
            ffi::lua_getfield(l, ffi::LUA_REGISTRYINDEX, c"_LOADED".as_ptr());
            if ffi::lua_type(l, -1) == ffi::LUA_TTABLE {
                ffi::lua_getfield(l, -1, c"coroutine".as_ptr());
                if ffi::lua_type(l, -1) == ffi::LUA_TTABLE && stock(l).is_some() {
                    set(l, c"resume", l_resume);
                    set(l, c"wrap", l_wrap);
                    #[cfg(any(feature = "lua54", feature = "lua55"))]
                    set(l, c"close", l_close);
                }
            }
            ffi::lua_settop(l, top);
        }
    }

    /// # Safety
    /// The table to set is on top; raising allowed.
    unsafe fn set(l: RawState, name: &CStr, f: ffi::lua_CFunction) {
        // SAFETY: see the function's contract.
        unsafe {
            ffi::lua_pushcfunction(l, f);
            ffi::lua_setfield(l, -2, name.as_ptr());
        }
    }

    /// The stock functions, read from the stock `coroutine` table on top of `l` the
    /// first time; `None` when they are not C functions (then nothing is replaced).
    ///
    /// # Safety
    /// The stock `coroutine` table on top; raising allowed; three free slots.
    unsafe fn stock(l: RawState) -> Option<&'static Stock> {
        if let Some(stock) = STOCK.get() {
            return Some(stock);
        }
        // SAFETY: see the function's contract; each value read is popped.
        unsafe {
            let field = |name: &CStr| {
                ffi::lua_getfield(l, -1, name.as_ptr());
                let f = ffi::lua_tocfunction(l, -1);
                ffi::lua_settop(l, -2);
                f
            };
            let resume = field(c"resume")?;
            let create = field(c"create")?;
            #[cfg(any(feature = "lua54", feature = "lua55"))]
            let close = field(c"close")?;
            // A closure made by the stock wrap names the C function they all share.
            ffi::lua_getfield(l, -1, c"wrap".as_ptr());
            if ffi::luaL_loadstring(l, c"".as_ptr()) != ffi::LUA_OK {
                raise_top(l);
            }
            ffi::lua_call(l, 1, 1);
            let auxwrap = ffi::lua_tocfunction(l, -1);
            ffi::lua_settop(l, -2);
            let stock = Stock {
                resume,
                create,
                auxwrap: auxwrap?,
                #[cfg(any(feature = "lua54", feature = "lua55"))]
                close,
            };
            Some(STOCK.get_or_init(|| stock))
        }
    }

    /// The stock functions; set before any function of this module is installed.
    fn stock_set() -> &'static Stock {
        match STOCK.get() {
            Some(stock) => stock,
            // Not reachable: `install` reads them before installing anything.
            None => std::process::abort(),
        }
    }

    /// Whether `co` can be resumed from `l` as it is (the stock `coroutine.status`
    /// would say "suspended").
    ///
    /// # Safety
    /// Valid states; never raises.
    unsafe fn suspended(l: RawState, co: RawState) -> bool {
        if co == l {
            return false;
        }
        // SAFETY: status and call-stack reads only.
        unsafe {
            match ffi::lua_status(co) {
                ffi::LUA_YIELD => true,
                ffi::LUA_OK => {
                    let mut ar: ffi::lua_Debug = std::mem::zeroed();
                    ffi::lua_getstack(co, 0, &mut ar) == 0 && ffi::lua_gettop(co) > 0
                }
                _ => false,
            }
        }
    }

    /// Whether the stock resume would go as far as running `co` with `narg` arguments.
    ///
    /// # Safety
    /// Valid states, raising allowed (5.1 grows the stack of `co` here, as the stock
    /// function would).
    unsafe fn will_run(l: RawState, co: RawState, narg: c_int) -> bool {
        // SAFETY: see the function's contract.
        unsafe { suspended(l, co) && ffi::lua_checkstack(co, narg) != 0 }
    }

    /// Runs `co` with the top `narg` values of `l` as arguments. Returns the number of
    /// results, moved onto `l`, or -1 with the error on top of `l`.
    ///
    /// # Safety
    /// Called from a C function Lua called on `l`, owning nothing; `will_run` said yes.
    unsafe fn resume(l: RawState, co: RawState, narg: c_int) -> c_int {
        // SAFETY: see the function's contract. Between the switches only `lua_resume`
        // runs, which keeps errors of `co` in `co`.
        unsafe {
            if !keep_interned(l) {
                return -1;
            }
            ffi::lua_xmove(l, co, narg);
            #[cfg(feature = "lua51")]
            lua_setlevel(l, co);
            let switch = interrupt::switch_to(l, co);
            let mut nres = 0;
            let status = ffi::lua_resume(co, l, narg, &mut nres);
            interrupt::switch_back(switch);
            if status != ffi::LUA_OK && status != ffi::LUA_YIELD {
                ffi::lua_xmove(co, l, 1);
                return -1;
            }
            if ffi::lua_checkstack(l, nres + 1) == 0 {
                #[cfg(feature = "lua51")]
                ffi::luaL_error(l, c"too many results to resume".as_ptr());
                #[cfg(not(feature = "lua51"))]
                {
                    ffi::lua_settop(co, -nres - 1);
                    ffi::lua_pushstring(l, c"too many results to resume".as_ptr());
                    return -1;
                }
            }
            ffi::lua_xmove(co, l, nres);
            nres
        }
    }

    /// `coroutine.resume(co, ...)`.
    unsafe extern "C-unwind" fn l_resume(l: RawState) -> c_int {
        let stock = stock_set();
        // SAFETY: called by Lua, owning nothing: raising is fine. The stock function
        // gets this very frame, as if Lua had called it.
        unsafe {
            let co = ffi::lua_tothread(l, 1);
            let narg = ffi::lua_gettop(l) - 1;
            if co.is_null() {
                return (stock.resume)(l);
            }
            if !will_run(l, co, narg) {
                // The stock function refuses; its message must not need memory.
                if !keep_interned(l) {
                    ffi::lua_pushboolean(l, 0);
                    ffi::lua_insert(l, -2);
                    return 2;
                }
                return (stock.resume)(l);
            }
            let r = resume(l, co, narg);
            if r < 0 {
                ffi::lua_pushboolean(l, 0);
                ffi::lua_insert(l, -2);
                2
            } else {
                ffi::lua_pushboolean(l, 1);
                ffi::lua_insert(l, -(r + 1));
                r + 1
            }
        }
    }

    /// `coroutine.wrap(f)`.
    unsafe extern "C-unwind" fn l_wrap(l: RawState) -> c_int {
        let stock = stock_set();
        // SAFETY: called by Lua, owning nothing. The stock `create`, called in this
        // frame, checks argument 1 as the stock `wrap` does and pushes the coroutine.
        unsafe {
            (stock.create)(l);
            let co = ffi::lua_tothread(l, -1);
            if !co.is_null() {
                interrupt::adopt(l, co);
            }
            ffi::lua_pushcclosure(l, l_wrapped, 1);
        }
        1
    }

    /// A function made by `coroutine.wrap`; its upvalue is the coroutine.
    unsafe extern "C-unwind" fn l_wrapped(l: RawState) -> c_int {
        let stock = stock_set();
        // SAFETY: called by Lua, owning nothing. The stock wrapper, called in this
        // frame, finds the coroutine in this closure's upvalue 1, as in its own.
        unsafe {
            let co = ffi::lua_tothread(l, ffi::lua_upvalueindex(1));
            if co.is_null() {
                // Only `debug.setupvalue` gets here (the stock wrapper would crash).
                ffi::luaL_error(l, c"coroutine expected".as_ptr());
                return 0;
            }
            let narg = ffi::lua_gettop(l);
            if !will_run(l, co, narg) {
                // The stock wrapper refuses; its message must not need memory.
                if !keep_interned(l) {
                    raise_top(l);
                }
                return (stock.auxwrap)(l);
            }
            let r = resume(l, co, narg);
            if r >= 0 {
                return r;
            }
            wrap_error(l, co)
        }
    }

    /// Raises the error on top of `l` that resuming `co` gave, as the stock wrapper
    /// does (5.1 - 5.3: a string error gets the caller's position; on 5.1 and 5.2 a
    /// number counts as a string).
    ///
    /// # Safety
    /// As in [`l_wrapped`].
    #[cfg(not(any(feature = "lua54", feature = "lua55")))]
    unsafe fn wrap_error(l: RawState, _co: RawState) -> c_int {
        // SAFETY: see the function's contract.
        unsafe {
            let prefixed = if cfg!(feature = "lua53") {
                ffi::lua_type(l, -1) == ffi::LUA_TSTRING
            } else {
                ffi::lua_isstring(l, -1) != 0
            };
            if prefixed {
                ffi::luaL_where(l, 1);
                ffi::lua_insert(l, -2);
                ffi::lua_concat(l, 2);
            }
            raise_top(l)
        }
    }

    /// Raises the error on top of `l` that resuming `co` gave, as the stock wrapper
    /// does (5.4: a coroutine that failed is closed first, running its pending
    /// to-be-closed variables, which may change the error).
    ///
    /// # Safety
    /// As in [`l_wrapped`].
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    unsafe fn wrap_error(l: RawState, co: RawState) -> c_int {
        // SAFETY: see the function's contract; only `lua_resetthread` (5.5:
        // `lua_closethread`) runs between the switches.
        unsafe {
            let mut status = ffi::lua_status(co);
            if status != ffi::LUA_OK && status != ffi::LUA_YIELD {
                if !keep_interned(l) {
                    raise_top(l);
                }
                let switch = interrupt::switch_to(l, co);
                status = close_thread(co, l);
                interrupt::switch_back(switch);
                ffi::lua_xmove(co, l, 1);
            }
            if status != ffi::LUA_ERRMEM && ffi::lua_type(l, -1) == ffi::LUA_TSTRING {
                ffi::luaL_where(l, 1);
                ffi::lua_insert(l, -2);
                ffi::lua_concat(l, 2);
            }
            raise_top(l)
        }
    }

    /// Closes `co`'s pending to-be-closed variables and resets it, as the stock wrapper
    /// does: `lua_resetthread` on 5.4 (Debian's 5.4.4 has no `lua_closethread`), and
    /// on 5.5, which has only `lua_closethread`, that with `from`, the state resuming.
    ///
    /// # Safety
    /// `co` is a coroutine of `from`'s state that is not running.
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    unsafe fn close_thread(co: RawState, from: RawState) -> c_int {
        // SAFETY: see the function's contract.
        unsafe {
            #[cfg(feature = "lua54")]
            let _ = from;
            #[cfg(feature = "lua54")]
            return ffi::lua_resetthread(co);
            #[cfg(feature = "lua55")]
            return ffi::lua_closethread(co, from);
        }
    }

    /// `coroutine.close(co)` (5.4): the pending to-be-closed variables of `co` run in
    /// `co`, so interrupts go there meanwhile.
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    unsafe extern "C-unwind" fn l_close(l: RawState) -> c_int {
        let stock = stock_set();
        // SAFETY: called by Lua, owning nothing. A coroutine the stock function
        // refuses to close (running, or normal: it has frames) goes to it without a
        // switch, and it raises its own error; for the others it only calls
        // `lua_resetthread` and pushes the outcome, which cannot raise.
        unsafe {
            let co = ffi::lua_tothread(l, 1);
            let refused = co.is_null() || co == l || {
                let mut ar: ffi::lua_Debug = std::mem::zeroed();
                ffi::lua_status(co) == ffi::LUA_OK && ffi::lua_getstack(co, 0, &mut ar) != 0
            };
            if refused {
                return (stock.close)(l);
            }
            // A coroutine that never ran or that returned has nothing to close, and
            // closing it creates no message: it needs no memory, as with the stock one.
            if ffi::lua_status(co) != ffi::LUA_OK && !keep_interned(l) {
                // As the stock `close` reports a failed close.
                ffi::lua_pushboolean(l, 0);
                ffi::lua_insert(l, -2);
                return 2;
            }
            let switch = interrupt::switch_to(l, co);
            let n = (stock.close)(l);
            interrupt::switch_back(switch);
            n
        }
    }
}
