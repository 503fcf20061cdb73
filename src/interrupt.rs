//! Interrupting a running child, without touching its Lua state from another thread.
//!
//! `lua_sethook` made from the parent's thread races the child: on 5.4 it walks and
//! writes the child's call-frame list while the child may be freeing those frames
//! (valgrind showed it; the C original has the same flaw). So the parent only
//! records the request (an atomic) and sends a signal to the child's OS thread. The
//! signal handler runs on that thread and calls `lua_sethook` there, which is what
//! Lua's own `lua.c` does for Ctrl-C. The hook then reads the request: "once" raises
//! and consumes it, "always" raises on every event, "remove" takes the hook away.
//!
//! The signal is the first real-time signal from `SIGRTMIN + 2` up whose disposition
//! is the default when first needed (so a host's own handlers are never replaced);
//! it is installed with `SA_RESTART`. A blocking call that the kernel does not restart
//! (`nanosleep`, `poll`...) returns early with `EINTR` when its thread is interrupted.

use std::ffi::c_int;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use std::sync::OnceLock;

use mlua::ffi;

use crate::api::Module;
use crate::child;
use crate::ffi::{raise_top, RawState};

/// What `interrupt` asked for; stored in [`Interruptor::request`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Request {
    None = 0,
    Once = 1,
    Always = 2,
    Remove = 3,
}

impl Request {
    fn from_u8(v: u8) -> Request {
        match v {
            1 => Request::Once,
            2 => Request::Always,
            3 => Request::Remove,
            _ => Request::None,
        }
    }
}

/// The request of one thread, shared by its record and, while the chunk runs, by the
/// hook and the signal handler on the child's thread.
pub struct Interruptor {
    request: AtomicU8,
    /// A signal is on its way to the child's thread. Real-time signals queue every
    /// instance, so an interrupt storm would otherwise fill the user's pending-signal
    /// quota (`RLIMIT_SIGPENDING`), failing later sends here and in other programs.
    signalled: AtomicBool,
    module: Module,
}

impl Interruptor {
    pub fn new(module: Module, initial: Request) -> Interruptor {
        Interruptor {
            request: AtomicU8::new(initial as u8),
            signalled: AtomicBool::new(false),
            module,
        }
    }

    pub fn set(&self, request: Request) {
        self.request.store(request as u8, Ordering::SeqCst);
    }

    fn get(&self) -> Request {
        Request::from_u8(self.request.load(Ordering::SeqCst))
    }
}

// The running chunk of this thread, for the signal handler and the hook. Atomics,
// because a signal handler may read them at any point of this thread's execution.
thread_local! {
    static STATE: AtomicPtr<ffi::lua_State> = const { AtomicPtr::new(ptr::null_mut()) };
    static INTERRUPTOR: AtomicPtr<Interruptor> = const { AtomicPtr::new(ptr::null_mut()) };
}

/// Called on the child's thread before its chunk runs: makes this thread's chunk
/// reachable by the signal handler and applies a request made before it ran. Returns
/// the thread to signal.
///
/// # Safety
/// `state` is the child's state, used by this thread only; `interruptor` outlives the
/// matching [`leave`].
pub unsafe fn enter(state: RawState, interruptor: &Interruptor) -> libc::pthread_t {
    let signal = signal();
    // (The first access also allocates this thread's TLS block, here rather than
    // inside the signal handler.)
    INTERRUPTOR.with(|i| i.store(interruptor as *const _ as *mut _, Ordering::SeqCst));
    STATE.with(|s| s.store(state, Ordering::SeqCst));
    // SAFETY: (1) unblocking a signal for this thread only; (2) `state` is this
    // thread's own state, so `lua_sethook` runs where Lua expects it.
    unsafe {
        if let Some(sig) = signal {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, ptr::null_mut());
        }
        apply(state, interruptor.get());
        libc::pthread_self()
    }
}

/// Called on the child's thread when its chunk is done: the handler no longer reaches
/// the state, and any hook is removed.
///
/// # Safety
/// Same thread and state as the matching [`enter`].
pub unsafe fn leave(state: RawState) {
    STATE.with(|s| s.store(ptr::null_mut(), Ordering::SeqCst));
    INTERRUPTOR.with(|i| i.store(ptr::null_mut(), Ordering::SeqCst));
    // SAFETY: this thread's own state.
    unsafe { ffi::lua_sethook(state, None, 0, 0) };
}

/// Wakes the child's thread so that it installs its hook, unless a signal is already
/// on its way (the handler reads the latest request anyway). Called with the record's
/// lock held while the chunk runs, so `thread` is alive and running it.
pub fn deliver(thread: libc::pthread_t, interruptor: &Interruptor) {
    let Some(sig) = signal() else {
        log::warn!("no free real-time signal; interrupt() cannot reach a running thread");
        return;
    };
    if interruptor.signalled.swap(true, Ordering::SeqCst) {
        return;
    }
    // SAFETY: the caller guarantees `thread` is a live thread of this process.
    let rc = unsafe { libc::pthread_kill(thread, sig) };
    if rc != 0 {
        interruptor.signalled.store(false, Ordering::SeqCst);
        log::warn!("could not signal a thread to interrupt it (error {rc})");
    }
}

/// The signal this library copy uses, installed on first use.
fn signal() -> Option<c_int> {
    static SIGNAL: OnceLock<Option<c_int>> = OnceLock::new();
    *SIGNAL.get_or_init(|| {
        // SAFETY: `sigaction` reads or sets process-wide dispositions; only a signal
        // whose disposition is the default (nobody handles it) is taken.
        unsafe {
            for sig in libc::SIGRTMIN() + 2..=libc::SIGRTMAX() {
                let mut old: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, ptr::null(), &mut old) != 0
                    || old.sa_sigaction != libc::SIG_DFL
                {
                    continue;
                }
                let mut new: libc::sigaction = std::mem::zeroed();
                new.sa_sigaction = on_signal as extern "C" fn(c_int) as usize;
                new.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut new.sa_mask);
                if libc::sigaction(sig, &new, ptr::null_mut()) == 0 {
                    log::debug!("interrupts use signal {sig}");
                    return Some(sig);
                }
            }
            None
        }
    })
}

/// Runs on the interrupted child's thread, at any point of its execution.
extern "C" fn on_signal(_sig: c_int) {
    let state = STATE.with(|s| s.load(Ordering::SeqCst));
    let interruptor = INTERRUPTOR.with(|i| i.load(Ordering::SeqCst));
    if state.is_null() || interruptor.is_null() {
        return; // the chunk has ended, or this was a late signal for an earlier one
    }
    // SAFETY: (1) both pointers were stored by `enter` on this thread and are cleared
    // by `leave` before they become invalid; (2) `lua_sethook` is documented safe to
    // call asynchronously, as from a signal handler, on the thread running the state;
    // (3) atomics and `lua_sethook` neither allocate nor take locks.
    unsafe {
        let interruptor = &*interruptor;
        // Cleared before reading the request: a request made after this point sends
        // a new signal, so none is missed.
        interruptor.signalled.store(false, Ordering::SeqCst);
        apply(state, interruptor.get());
    }
}

/// Installs the hook for a raising request; "remove" is left to the hook itself.
///
/// # Safety
/// On the thread running `state` (or from a signal handler on it).
unsafe fn apply(state: RawState, request: Request) {
    if matches!(request, Request::Once | Request::Always) {
        const MASK: c_int = ffi::LUA_MASKCALL | ffi::LUA_MASKRET | ffi::LUA_MASKCOUNT;
        // SAFETY: see the function's contract.
        unsafe { ffi::lua_sethook(state, Some(hook), MASK, 1) };
    }
}

/// The interrupt hook: acts on the current request.
unsafe extern "C-unwind" fn hook(l: RawState, _ar: *mut ffi::lua_Debug) {
    let interruptor = INTERRUPTOR.with(|i| i.load(Ordering::SeqCst));
    // SAFETY: Lua runs hooks on the child's thread, where raising is allowed; this frame
    // owns nothing. `interruptor` is valid while non-null (see `on_signal`).
    unsafe {
        if interruptor.is_null() {
            ffi::lua_sethook(l, None, 0, 0);
            return;
        }
        let interruptor = &*interruptor;
        if in_message_handler(l) {
            return; // let the error being reported through; the hook stays set
        }
        match interruptor.get() {
            Request::None | Request::Remove => {
                ffi::lua_sethook(l, None, 0, 0);
            }
            Request::Once => {
                interruptor.set(Request::None);
                ffi::lua_sethook(l, None, 0, 0);
                raise_interrupted(l, interruptor.module)
            }
            Request::Always => raise_interrupted(l, interruptor.module),
        }
    }
}

/// # Safety
/// Inside a hook on `l`.
unsafe fn raise_interrupted(l: RawState, module: Module) -> ! {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::lua_pushstring(l, module.interrupted_error().as_ptr());
        raise_top(l)
    }
}

/// Whether the running function is the chunk's message handler. Raising there would
/// replace the error being reported (often the interrupt itself) with Lua's "error in
/// error handling", so the hook lets the handler finish.
///
/// # Safety
/// Inside a hook on `l` (which guarantees free stack slots).
unsafe fn in_message_handler(l: RawState) -> bool {
    // SAFETY: `lua_getstack` and `lua_getinfo` with "f" only read the call stack and
    // push the running function, popped at once; neither allocates.
    unsafe {
        let mut ar: ffi::lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(l, 0, &mut ar) == 0 {
            return false;
        }
        ffi::lua_getinfo(l, c"f".as_ptr(), &mut ar);
        let running = ffi::lua_tocfunction(l, -1);
        ffi::lua_settop(l, -2);
        let handler: ffi::lua_CFunction = child::traceback;
        running.is_some_and(|f| std::ptr::fn_addr_eq(f, handler))
    }
}
