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
//!
//! The handler finds the thread's [`Interruptor`] in the signal itself
//! (`pthread_sigqueue` carries its address), not in a thread-local: in a `dlopen`ed
//! library a thread-local goes through `__tls_get_addr`, which may take the loader's
//! lock or call `malloc` once another library with thread-locals has been loaded, so
//! a signal landing in `malloc` or `dlopen` (a child's `require`) could deadlock. The
//! signal is unblocked on the child's thread only while its chunk runs; when the
//! chunk ends it is blocked again and any instance still pending is discarded, so no
//! handler ever sees the address of an interruptor that is gone.

use std::ffi::{c_int, c_void};
use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};
use std::sync::OnceLock;

use mlua::ffi;

use crate::errors;
use crate::names::Module;
use crate::raw::{raise_top, RawState};

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
    /// The running chunk's state, for the signal handler; null outside [`enter`] ..
    /// [`leave`].
    state: AtomicPtr<ffi::lua_State>,
    module: Module,
}

impl Interruptor {
    pub fn new(module: Module, initial: Request) -> Interruptor {
        Interruptor {
            request: AtomicU8::new(initial as u8),
            signalled: AtomicBool::new(false),
            state: AtomicPtr::new(ptr::null_mut()),
            module,
        }
    }

    pub fn set(&self, request: Request) {
        self.request.store(request as u8, Ordering::SeqCst);
    }

    fn get(&self) -> Request {
        Request::from_u8(self.request.load(Ordering::SeqCst))
    }

    /// Turns a pending "once" into no request; false if another request replaced it.
    fn consume_once(&self) -> bool {
        self.request
            .compare_exchange(
                Request::Once as u8,
                Request::None as u8,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }
}

// The interruptor of the chunk this thread runs, for the hook (which Lua calls in
// ordinary context, where a thread-local is fine; the signal handler never reads it).
thread_local! {
    static INTERRUPTOR: AtomicPtr<Interruptor> = const { AtomicPtr::new(ptr::null_mut()) };
}

/// For a wait in the chunk running on this thread (a channel operation, `select`,
/// `sleep`, `join`): the module whose `interrupted_error` to raise now, or `None` to
/// go on waiting. A "once" request is consumed here, as the hook would consume it.
/// Always `None` on a thread that runs no chunk of ours (the host's threads).
pub fn pending_in_wait() -> Option<Module> {
    let interruptor = INTERRUPTOR.with(|i| i.load(Ordering::SeqCst));
    // SAFETY: non-null only between `enter` and `leave` on this thread, while the
    // record holding the interruptor lives.
    let interruptor = unsafe { interruptor.as_ref() }?;
    match interruptor.get() {
        Request::Always => Some(interruptor.module),
        Request::Once if interruptor.consume_once() => Some(interruptor.module),
        _ => None,
    }
}

/// Called on the child's thread before its chunk runs: makes this thread's chunk
/// reachable by the signal handler and applies a request made before it ran. Returns
/// the thread to signal.
///
/// # Safety
/// `state` is the child's state, used by this thread only; `interruptor` outlives the
/// matching [`leave`].
pub unsafe fn enter(state: RawState, interruptor: &Interruptor) -> libc::pthread_t {
    INTERRUPTOR.with(|i| i.store(interruptor as *const _ as *mut _, Ordering::SeqCst));
    interruptor.state.store(state, Ordering::SeqCst);
    if let Some(sig) = signal() {
        set_blocked(sig, false);
    }
    // SAFETY: `state` is this thread's own state, so `lua_sethook` runs where Lua
    // expects it.
    unsafe { apply(state, interruptor.get()) };
    // SAFETY: no preconditions.
    unsafe { libc::pthread_self() }
}

/// Called on the child's thread when its chunk is done, after the last [`deliver`]
/// for it: no handler runs for it any more, and any hook is removed.
///
/// # Safety
/// Same thread, state and interruptor as the matching [`enter`].
pub unsafe fn leave(state: RawState, interruptor: &Interruptor) {
    if let Some(sig) = signal() {
        // Blocked first, then drained: a signal sent before the chunk ended either
        // ran its handler already or is discarded here, while `interruptor` lives.
        set_blocked(sig, true);
        discard_pending(sig);
    }
    interruptor.state.store(ptr::null_mut(), Ordering::SeqCst);
    INTERRUPTOR.with(|i| i.store(ptr::null_mut(), Ordering::SeqCst));
    // SAFETY: this thread's own state.
    unsafe { ffi::lua_sethook(state, None, 0, 0) };
}

/// Blocks or unblocks `sig` for the calling thread only.
fn set_blocked(sig: c_int, blocked: bool) {
    let how = if blocked {
        libc::SIG_BLOCK
    } else {
        libc::SIG_UNBLOCK
    };
    // SAFETY: a signal set built in place and given to the calling thread's mask.
    unsafe {
        let set = signal_set(sig);
        libc::pthread_sigmask(how, &set, ptr::null_mut());
    }
}

/// Takes every pending instance of `sig` (blocked by the caller) without running the
/// handler.
fn discard_pending(sig: c_int) {
    let set = signal_set(sig);
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        // SAFETY: valid set and timeout; the signal information is not wanted.
        let got = unsafe { libc::sigtimedwait(&set, ptr::null_mut(), &zero) };
        let interrupted =
            got < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
        if got != sig && !interrupted {
            break; // EAGAIN: nothing (more) pending
        }
    }
}

fn signal_set(sig: c_int) -> libc::sigset_t {
    // SAFETY: `sigemptyset` initialises the set before `sigaddset` reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        set
    }
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
    let value = libc::sigval {
        sival_ptr: interruptor as *const Interruptor as *mut c_void,
    };
    // SAFETY: the caller guarantees `thread` is a live thread of this process.
    let rc = unsafe { libc::pthread_sigqueue(thread, sig, value) };
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
                new.sa_sigaction = on_signal as Handler as usize;
                new.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
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

type Handler = extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void);

/// Runs on the interrupted child's thread, at any point of its execution. Only
/// async-signal-safe work here: atomics, `getpid` and `lua_sethook`.
extern "C" fn on_signal(_sig: c_int, info: *mut libc::siginfo_t, _context: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler.
    let Some(info) = (unsafe { info.as_ref() }) else {
        return;
    };
    // Only what `deliver` queued carries an interruptor: not a `kill` or another
    // process's signal.
    // SAFETY: `getpid` has no preconditions; `si_pid` and `si_value` are the
    // fields of an `SI_QUEUE` signal, checked first.
    let ours = info.si_code == libc::SI_QUEUE && unsafe { info.si_pid() == libc::getpid() };
    if !ours {
        return;
    }
    // SAFETY: `si_value` is set for an `SI_QUEUE` signal.
    let interruptor = unsafe { info.si_value().sival_ptr } as *const Interruptor;
    // SAFETY: (1) `deliver` queued the address of an interruptor whose chunk was
    // running on this thread; (2) the signal is unblocked only between `enter` and
    // `leave`, and `leave` discards what is still pending before the interruptor can
    // go (its record outlives `leave`), so it is alive now.
    let Some(interruptor) = (unsafe { interruptor.as_ref() }) else {
        return;
    };
    // Cleared before reading the request: a request made after this point sends a
    // new signal, so none is missed.
    interruptor.signalled.store(false, Ordering::SeqCst);
    let state = interruptor.state.load(Ordering::SeqCst);
    if state.is_null() {
        return;
    }
    // SAFETY: `state` is the state of the chunk running on this thread (set by
    // `enter` before the signal was unblocked); `lua_sethook` is documented safe to
    // call asynchronously from a signal handler on the thread running the state.
    unsafe { apply(state, interruptor.get()) };
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
    // owns nothing. `interruptor` is valid while non-null: `leave` clears it before
    // the record that holds it can go.
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
            Request::None | Request::Remove => remove_hook(l, interruptor),
            Request::Once => {
                // Only this request is consumed: a newer one stored since `get` stays.
                if interruptor.consume_once() {
                    remove_hook(l, interruptor);
                    raise_interrupted(l, interruptor.module)
                }
                // A newer request replaced it; the next event acts on that one.
            }
            Request::Always => raise_interrupted(l, interruptor.module),
        }
    }
}

/// Takes the hook away, unless a request that raises was made meanwhile.
///
/// The parent may store a request at any point of the hook, and the signal handler
/// may run in the middle of it (it interrupts this very thread): a request made after
/// the hook read "remove", or the hook the handler installed for it, would otherwise
/// be undone by the removal. So the request is read again after removing, and the
/// hook put back for it. A request made later still sends a signal of its own.
///
/// # Safety
/// Inside a hook on `l`, the state of `interruptor`'s thread.
unsafe fn remove_hook(l: RawState, interruptor: &Interruptor) {
    // SAFETY: see the function's contract.
    unsafe {
        ffi::lua_sethook(l, None, 0, 0);
        apply(l, interruptor.get());
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
        let handler: ffi::lua_CFunction = errors::traceback;
        running.is_some_and(|f| std::ptr::fn_addr_eq(f, handler))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The defect: the hook consumed "once" by storing "none", overwriting an
    // `interrupt(true)` the parent made between the hook's read and that store, so a
    // thread meant to stop ran to its end (seen in the full-size stress run).
    #[test]
    fn once_consumed_by_the_hook_does_not_clobber_a_newer_always() {
        let interruptor = Interruptor::new(Module::Llthreads, Request::Once);
        let seen = interruptor.get(); // the hook reads "once"...
        interruptor.set(Request::Always); // ...the parent asks for more meanwhile
        assert_eq!(seen, Request::Once);
        assert!(!interruptor.consume_once());
        assert_eq!(interruptor.get(), Request::Always);
    }

    #[test]
    fn once_is_consumed_when_no_newer_request_came() {
        let interruptor = Interruptor::new(Module::Llthreads, Request::Once);
        assert!(interruptor.consume_once());
        assert_eq!(interruptor.get(), Request::None);
        assert!(!interruptor.consume_once());
    }
}
