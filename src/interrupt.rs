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
//! Which state gets the hook. On PUC Lua a hook belongs to one `lua_State`, and a
//! coroutine is a state of its own. The child's `coroutine.resume`, `coroutine.wrap`
//! and (5.4) `coroutine.close` are this library's (`coroutine.rs`): around every switch
//! they tell [`switch_to`] / [`switch_back`] which state runs now, and the hook moves
//! to that state. The signal handler hooks the state running at that moment. LuaJIT's
//! hooks are global, so there the chunk's state stands for all of its coroutines.
//!
//! The user's own hook. Before ours goes on a state, the hook that state had
//! (`debug.sethook`: function, mask, count) is saved; when ours comes off (the request
//! was delivered or withdrawn, or the state stopped running), the saved one goes back.
//! The library keeps ours on one state at a time, the running one. When the chunk
//! ends, every hook of its state is removed, so no hook runs in the library's own work
//! that follows (reporting the error, handing the results to `join`).
//!
//! Only in user code. While the running function is a C function of this library (its
//! address lies in this library's executable segment), the hook neither raises nor
//! consumes the request: it stays set and acts at the next event in other code. So a
//! request never cuts into the library's protected calls (a chunk about to start, a
//! copy of results); `join` itself checks for a request before it takes a finished
//! thread's results ([`claim_here`]), so the results are never dropped.
//!
//! The signal is the first real-time signal from `SIGRTMIN + 2` up whose disposition
//! is the default when first needed (so a host's own handlers are never replaced);
//! it is installed with `SA_RESTART`. A blocking call that the kernel does not restart
//! (`nanosleep`, `poll`...) returns early with `EINTR` when its thread is interrupted.
//!
//! The handler trusts nothing in the signal. What `deliver` queues is a token naming a
//! slot of a fixed table ([`slots`]) plus that slot's generation; the handler acts
//! only when the slot is live, of that generation, and registered by the very thread
//! the handler runs on, and it reads no other memory from the signal. A signal queued
//! by anyone else (junk, or a stale token) is ignored. There are no thread-locals in
//! the handler: in a `dlopen`ed library a thread-local goes through `__tls_get_addr`,
//! which may take the loader's lock or call `malloc` once another library with
//! thread-locals has been loaded, so a signal landing in `malloc` or `dlopen` (a
//! child's `require`) could deadlock. The signal is unblocked on the child's thread
//! only while its chunk runs; when the chunk ends it is blocked again and any instance
//! still pending is discarded before the slot is released.

use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::io;
use std::ptr;
use std::sync::atomic::{
    compiler_fence, AtomicBool, AtomicI32, AtomicPtr, AtomicU8, AtomicUsize, Ordering,
};
use std::sync::OnceLock;

use mlua::ffi;

use crate::names::Module;
use crate::raw::{lua_State, raise_top, RawState};
use crate::slot::ThreadSlot;

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

    /// Whether the request makes the hook raise.
    fn raises(self) -> bool {
        matches!(self, Request::Once | Request::Always)
    }
}

/// The request of one thread, shared by its record and, while the chunk runs, by the
/// hook, the coroutine functions and the signal handler on the child's thread.
pub struct Interruptor {
    request: AtomicU8,
    /// A signal is on its way to the child's thread. Real-time signals queue every
    /// instance, so an interrupt storm would otherwise fill the user's pending-signal
    /// quota (`RLIMIT_SIGPENDING`), failing later sends here and in other programs.
    signalled: AtomicBool,
    /// What [`deliver`] sends: this interruptor's [`slots`] token while the chunk runs,
    /// 0 otherwise.
    token: AtomicUsize,
    hooks: Hooks,
    module: Module,
}

impl Interruptor {
    pub fn new(module: Module, initial: Request) -> Interruptor {
        Interruptor {
            request: AtomicU8::new(initial as u8),
            signalled: AtomicBool::new(false),
            token: AtomicUsize::new(0),
            hooks: Hooks::new(),
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

/// Where the hook is, for one running chunk. Touched only on the child's thread: by
/// ordinary code (the hook, the coroutine switches, `enter`, `leave`) and by the
/// signal handler, which may interrupt that code at any instruction. Ordinary code
/// changes several fields at once only between [`Hooks::lock`] and [`Hooks::unlock`];
/// a handler that finds the lock taken leaves a note (`deferred`) and returns, and
/// `unlock` does the handler's work. The thread races only with itself, so relaxed
/// atomics ordered by compiler fences are enough.
struct Hooks {
    /// The state running the chunk's code now (the chunk's own, or a coroutine); null
    /// outside [`enter`] .. [`leave`].
    current: AtomicPtr<lua_State>,
    /// The state carrying our hook, or null. Always null or `current`, outside a lock.
    hooked: AtomicPtr<lua_State>,
    /// The hook `hooked` had before ours (function as an address, 0 for none).
    saved_func: AtomicUsize,
    saved_mask: AtomicI32,
    saved_count: AtomicI32,
    busy: AtomicBool,
    deferred: AtomicBool,
}

const R: Ordering = Ordering::Relaxed;

/// The hook a state had before ours, to put back.
#[derive(Clone, Copy)]
struct UserHook {
    func: Option<ffi::lua_Hook>,
    mask: c_int,
    count: c_int,
}

impl UserHook {
    const NONE: UserHook = UserHook {
        func: None,
        mask: 0,
        count: 0,
    };
}

impl Hooks {
    const fn new() -> Hooks {
        Hooks {
            current: AtomicPtr::new(ptr::null_mut()),
            hooked: AtomicPtr::new(ptr::null_mut()),
            saved_func: AtomicUsize::new(0),
            saved_mask: AtomicI32::new(0),
            saved_count: AtomicI32::new(0),
            busy: AtomicBool::new(false),
            deferred: AtomicBool::new(false),
        }
    }

    fn lock(&self) {
        self.busy.store(true, R);
        compiler_fence(Ordering::SeqCst);
    }

    /// Releases the lock, then does what a signal handler left for it meanwhile.
    ///
    /// # Safety
    /// On the child's thread, with the lock held, `interruptor` owning `self`, and
    /// every state named in `self` alive.
    unsafe fn unlock(&self, interruptor: &Interruptor) {
        loop {
            compiler_fence(Ordering::SeqCst);
            self.busy.store(false, R);
            compiler_fence(Ordering::SeqCst);
            // A handler that runs from here on does its own work; only one that ran
            // while the lock was held left a note.
            if !self.deferred.load(R) {
                return;
            }
            self.deferred.store(false, R);
            self.lock();
            // SAFETY: forwarded contract, lock held again.
            unsafe { self.sync(interruptor) };
        }
    }

    fn saved(&self) -> UserHook {
        let func = self.saved_func.load(R);
        UserHook {
            // SAFETY: a non-zero `saved_func` was stored from a `lua_Hook` by `save`.
            func: (func != 0).then(|| unsafe { std::mem::transmute::<usize, ffi::lua_Hook>(func) }),
            mask: self.saved_mask.load(R),
            count: self.saved_count.load(R),
        }
    }

    fn save(&self, user: UserHook) {
        self.saved_func
            .store(user.func.map_or(0, |f| f as usize), R);
        self.saved_mask.store(user.mask, R);
        self.saved_count.store(user.count, R);
    }

    /// Puts our hook on `s` (and on no other state), saving the hook `s` had.
    ///
    /// # Safety
    /// Lock held (or in the signal handler, which ordinary code cannot interrupt);
    /// `s` and `hooked` are alive states of this chunk, `s` is current.
    unsafe fn install(&self, s: RawState) {
        // SAFETY: see the function's contract; reading and setting a state's hook only
        // touches that state's hook fields (on 5.4 it also marks the Lua frames of `s`
        // for tracing, as `lua.c`'s Ctrl-C handler does).
        unsafe {
            let hooked = self.hooked.load(R);
            let has_ours = is_ours(ffi::lua_gethook(s));
            if hooked == s && has_ours {
                return;
            }
            let user = if !has_ours {
                UserHook {
                    func: ffi::lua_gethook(s),
                    mask: ffi::lua_gethookmask(s),
                    count: ffi::lua_gethookcount(s),
                }
            } else if !hooked.is_null() {
                // `s` inherited ours from the state that created it while that state
                // carried it (PUC copies the creator's hook): its own is the
                // creator's, saved for `hooked`.
                self.saved()
            } else {
                UserHook::NONE
            };
            if hooked != s {
                self.uninstall();
            }
            self.save(user);
            self.hooked.store(s, R);
            compiler_fence(Ordering::SeqCst);
            ffi::lua_sethook(s, Some(hook), HOOK_MASK, 1);
        }
    }

    /// Takes our hook off the state carrying it and puts that state's own hook back
    /// (unless the user set another one meanwhile: that one stays).
    ///
    /// # Safety
    /// As for [`Hooks::install`].
    unsafe fn uninstall(&self) {
        let hooked = self.hooked.load(R);
        if hooked.is_null() {
            return;
        }
        // SAFETY: see the function's contract.
        unsafe {
            if is_ours(ffi::lua_gethook(hooked)) {
                let user = self.saved();
                ffi::lua_sethook(hooked, user.func, user.mask, user.count);
            }
        }
        compiler_fence(Ordering::SeqCst);
        self.hooked.store(ptr::null_mut(), R);
    }

    /// Takes our hook off `l`, the state it just fired on.
    ///
    /// # Safety
    /// Lock held, inside our hook on `l`.
    unsafe fn remove_from(&self, l: RawState) {
        let hooked = self.hooked.load(R);
        // SAFETY: see the function's contract.
        unsafe {
            if !hooked.is_null() && (cfg!(feature = "luajit") || l == hooked) {
                self.uninstall();
            } else {
                // A coroutine that inherited ours and was resumed by other means than
                // this library's functions: its own hook is not known.
                ffi::lua_sethook(l, None, 0, 0);
            }
        }
    }

    /// Applies the current request to the current state: hooks it for a raising
    /// request. Removal is left to the hook itself, at its next event.
    ///
    /// # Safety
    /// As for [`Hooks::install`], with `interruptor` owning `self`.
    unsafe fn sync(&self, interruptor: &Interruptor) {
        let current = self.current.load(R);
        if !current.is_null() && interruptor.get().raises() {
            // SAFETY: forwarded contract.
            unsafe { self.install(current) };
        }
    }

    /// Makes `to` the current state, moving our hook to it (or off the old one).
    ///
    /// # Safety
    /// On the child's thread, outside the lock, with `interruptor` owning `self`; `to`
    /// is a state of this chunk about to run (or running again), alive meanwhile.
    #[cfg(not(feature = "luajit"))]
    unsafe fn switch(&self, interruptor: &Interruptor, to: RawState) {
        self.current.store(to, R);
        compiler_fence(Ordering::SeqCst);
        // From here a handler hooks `to`. A hook elsewhere, or a request to apply,
        // needs the slow path; a handler that ran before the store left its hook on
        // the old state, seen here as `hooked`.
        if self.hooked.load(R).is_null() && !interruptor.get().raises() {
            return;
        }
        self.lock();
        // SAFETY: forwarded contract, lock held.
        unsafe {
            if self.hooked.load(R) != to {
                self.uninstall();
            }
            self.sync(interruptor);
            self.unlock(interruptor);
        }
    }
}

const HOOK_MASK: c_int = ffi::LUA_MASKCALL | ffi::LUA_MASKRET | ffi::LUA_MASKCOUNT;

fn is_ours(f: Option<ffi::lua_Hook>) -> bool {
    let ours: ffi::lua_Hook = hook;
    f.is_some_and(|f| std::ptr::fn_addr_eq(f, ours))
}

// The interruptor of the chunk this thread runs, for the hook, the coroutine functions
// and `join` (all called by Lua in ordinary context; the signal handler never reads
// it). In a thread-specific slot, not a thread-local (see `slot.rs`).
thread_local! {
    static FALLBACK: Cell<*const c_void> = const { Cell::new(ptr::null()) };
}
static THIS_THREAD: ThreadSlot = ThreadSlot::new(&FALLBACK);

fn this_thread() -> Option<&'static Interruptor> {
    let p = THIS_THREAD.get().cast::<Interruptor>();
    // SAFETY: non-null only between `enter` and `leave`, during which the record that
    // holds the interruptor is kept alive by the running child.
    unsafe { p.as_ref() }
}

/// Sets (non-null, in `enter`) or clears (null, in `leave`) what [`this_thread`] gives.
fn set_this_thread(interruptor: *const Interruptor) {
    THIS_THREAD.set(interruptor.cast());
}

/// Called on the child's thread before its chunk runs: makes this thread's chunk
/// reachable by the signal handler and applies a request made before it ran. Returns
/// the thread to signal.
///
/// # Safety
/// `state` is the child's state, used by this thread only; `interruptor` outlives the
/// matching [`leave`].
pub unsafe fn enter(state: RawState, interruptor: &Interruptor) -> libc::pthread_t {
    set_this_thread(interruptor);
    let hooks = &interruptor.hooks;
    hooks.current.store(state, R);
    hooks.hooked.store(ptr::null_mut(), R);
    hooks.deferred.store(false, R);
    library_text();
    // SAFETY: no preconditions.
    let me = unsafe { libc::pthread_self() };
    match slots::register(interruptor, me) {
        Some(token) => interruptor.token.store(token, Ordering::SeqCst),
        None => log::warn!("too many running threads; interrupt() cannot reach this one"),
    }
    if let Some(sig) = signal() {
        set_blocked(sig, false);
    }
    hooks.lock();
    // SAFETY: this thread's own state, current; lock held.
    unsafe {
        hooks.sync(interruptor);
        hooks.unlock(interruptor);
    }
    me
}

/// Called on the child's thread when its chunk is done, after the last [`deliver`]
/// for it: no handler runs for it any more, and every hook of its state is removed.
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
    let hooks = &interruptor.hooks;
    hooks.current.store(ptr::null_mut(), R);
    hooks.hooked.store(ptr::null_mut(), R);
    let token = interruptor.token.swap(0, Ordering::SeqCst);
    if token != 0 {
        slots::release(token);
    }
    set_this_thread(ptr::null());
    // SAFETY: this thread's own state.
    unsafe { ffi::lua_sethook(state, None, 0, 0) };
}

/// Called by the child's `debug.sethook` just after it set a hook: when a raising
/// request waits for its event on the current state, and the user's call replaced our
/// hook there, ours goes back on and the user's becomes the hook to put back.
pub fn user_hook_set() {
    let Some(interruptor) = this_thread() else {
        return;
    };
    let hooks = &interruptor.hooks;
    hooks.lock();
    // SAFETY: on the child's thread, in ordinary context, lock held; the states named
    // in `hooks` are this chunk's and alive while it runs.
    unsafe {
        hooks.sync(interruptor);
        hooks.unlock(interruptor);
    }
}

/// A coroutine switch made by [`switch_to`], to undo with [`switch_back`].
#[cfg(not(feature = "luajit"))]
#[derive(Clone, Copy)]
pub struct Switch {
    interruptor: *const Interruptor,
    previous: RawState,
}

/// Called by this library's coroutine functions just before `co` runs (resumed, or
/// closed with its pending to-be-closed variables): from now on interrupts go to `co`.
/// `None` when no chunk of this library runs on this thread, or when the calling
/// state `l` is not the one interrupts go to now: a coroutine of another state (a
/// finalizer of a grandchild state that `join` closes on this thread) or one that C
/// code resumed directly must not take this chunk's interrupt.
///
/// # Safety
/// Called on the thread running the calling state `l`, from a C function Lua called;
/// `co` stays alive until the matching [`switch_back`], which must follow whatever
/// happens in between (nothing between them may raise into the caller).
#[cfg(not(feature = "luajit"))]
pub unsafe fn switch_to(l: RawState, co: RawState) -> Option<Switch> {
    let interruptor = this_thread()?;
    let previous = interruptor.hooks.current.load(R);
    if previous != l {
        return None;
    }
    // SAFETY: forwarded contract; `previous` is the state making the call.
    unsafe { interruptor.hooks.switch(interruptor, co) };
    Some(Switch {
        interruptor,
        previous,
    })
}

/// Undoes [`switch_to`]: the state that made the switch runs again.
///
/// # Safety
/// The matching [`switch_to`]'s result, on the same thread, right after `co` stopped
/// running.
#[cfg(not(feature = "luajit"))]
pub unsafe fn switch_back(switch: Option<Switch>) {
    if let Some(s) = switch {
        // SAFETY: the interruptor outlives the chunk, which is still running; the
        // previous state is the caller of `switch_to`, alive and about to run.
        unsafe {
            let interruptor = &*s.interruptor;
            interruptor.hooks.switch(interruptor, s.previous);
        }
    }
}

/// Called by this library's `coroutine.wrap` just after it created `co` from `l`: when
/// `co` inherited our hook from `l`, gives it the hook `l` had of its own instead.
///
/// # Safety
/// On the thread running `l`, from a C function Lua called; `co` was just created by
/// `l` and has not run.
#[cfg(not(feature = "luajit"))]
pub unsafe fn adopt(l: RawState, co: RawState) {
    // SAFETY: see the function's contract.
    unsafe {
        if !is_ours(ffi::lua_gethook(co)) {
            return;
        }
        let Some(interruptor) = this_thread() else {
            ffi::lua_sethook(co, None, 0, 0);
            return;
        };
        let hooks = &interruptor.hooks;
        hooks.lock();
        let user = if hooks.hooked.load(R) == l {
            hooks.saved()
        } else {
            UserHook::NONE
        };
        ffi::lua_sethook(co, user.func, user.mask, user.count);
        hooks.unlock(interruptor);
    }
}

/// For a wait in the chunk running on this thread (a channel operation, `select`,
/// `sleep`, `join`), and for `join` before it takes a finished thread's results: when
/// a raising request is pending here, claims it (a "once" is consumed) and returns the
/// module whose `interrupted_error` to raise; `None` to go on. The caller then raises
/// instead of waiting or taking anything (a join's results stay for a later join).
/// Always `None` on a thread that runs no chunk of ours (the host's threads).
pub fn claim_here() -> Option<Module> {
    let interruptor = this_thread()?;
    match interruptor.get() {
        Request::Once => interruptor.consume_once().then_some(interruptor.module),
        Request::Always => Some(interruptor.module),
        Request::None | Request::Remove => None,
    }
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
    let token = interruptor.token.load(Ordering::SeqCst);
    if token == 0 || interruptor.signalled.swap(true, Ordering::SeqCst) {
        return;
    }
    let value = libc::sigval {
        sival_ptr: token as *mut c_void,
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

/// Runs on whatever thread of the process the signal reaches, at any point of its
/// execution. Only async-signal-safe work here: atomics, `getpid`, `pthread_self` (a
/// register read on glibc), and `lua_gethook*` / `lua_sethook` on the state running on
/// this very thread (or on its resumer, which is stopped inside a library call).
extern "C" fn on_signal(_sig: c_int, info: *mut libc::siginfo_t, _context: *mut c_void) {
    // SAFETY: the kernel passes a valid `siginfo_t` to an `SA_SIGINFO` handler.
    let Some(info) = (unsafe { info.as_ref() }) else {
        return;
    };
    // Only a queued signal from this process can carry a token: not a `kill`, and not
    // another process's signal.
    // SAFETY: `getpid` has no preconditions; `si_pid` and `si_value` are the fields of
    // an `SI_QUEUE` signal, checked first.
    let queued_here = info.si_code == libc::SI_QUEUE && unsafe { info.si_pid() == libc::getpid() };
    if !queued_here {
        return;
    }
    // SAFETY: `si_value` is set for an `SI_QUEUE` signal; it is only decoded.
    let value = unsafe { info.si_value().sival_ptr } as usize;
    // SAFETY: no preconditions.
    let me = unsafe { libc::pthread_self() };
    let Some(interruptor) = slots::lookup(value, me) else {
        return; // not a token of ours for this thread: ignored
    };
    // SAFETY: `lookup` returned the interruptor of the chunk running on this thread:
    // its slot is released by `leave` on this thread, after the signal is blocked and
    // drained, and the record holding it outlives `leave`.
    let interruptor = unsafe { &*interruptor };
    // Cleared before reading the request: a request made after this point sends a
    // new signal, so none is missed.
    interruptor.signalled.store(false, Ordering::SeqCst);
    let hooks = &interruptor.hooks;
    if hooks.busy.load(R) {
        hooks.deferred.store(true, R);
        return; // the interrupted code applies the request when it unlocks
    }
    hooks.lock();
    // SAFETY: the states in `hooks` are this chunk's: `current` runs on this thread
    // (set by `enter` or a switch before the signal could reach it) and `hooked` is
    // current or its stopped resumer; `lua_sethook` is documented safe to call
    // asynchronously from a signal handler on the thread running the state.
    unsafe { hooks.sync(interruptor) };
    compiler_fence(Ordering::SeqCst);
    hooks.busy.store(false, R);
}

/// The interrupt hook: acts on the current request, outside this library's own code.
unsafe extern "C-unwind" fn hook(l: RawState, _ar: *mut ffi::lua_Debug) {
    let Some(interruptor) = this_thread() else {
        // SAFETY: Lua calls hooks on the thread running `l`.
        unsafe { ffi::lua_sethook(l, None, 0, 0) };
        return;
    };
    let hooks = &interruptor.hooks;
    hooks.lock();
    // SAFETY: Lua calls hooks on the child's thread, on the running state `l`, with
    // free stack slots; the lock is held for the hook bookkeeping.
    let raise = unsafe {
        let raise = match interruptor.get() {
            Request::Once | Request::Always if running_library_code(l) => false,
            Request::Once => {
                // Only this request is consumed: a newer one stored since `get` stays
                // and is applied by `unlock` (or at the next event).
                let consumed = interruptor.consume_once();
                if consumed {
                    hooks.remove_from(l);
                }
                consumed
            }
            Request::Always => true,
            Request::None | Request::Remove => {
                hooks.remove_from(l);
                false
            }
        };
        hooks.unlock(interruptor);
        raise
    };
    if raise {
        // SAFETY: raising from a hook is allowed; this frame owns nothing.
        unsafe { raise_interrupted(l, interruptor.module) }
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

/// Whether the running function is a C function of this library: an entry point, the
/// protected-call trampoline, the chunk's message handler. Raising there would cut into
/// the library's own work (a copy in progress, the error being reported).
///
/// # Safety
/// Inside a hook on `l` (which guarantees free stack slots).
unsafe fn running_library_code(l: RawState) -> bool {
    // SAFETY: `lua_getstack` and `lua_getinfo` with "f" only read the call stack and
    // push the running function, popped at once; neither allocates.
    let running = unsafe {
        let mut ar: ffi::lua_Debug = std::mem::zeroed();
        if ffi::lua_getstack(l, 0, &mut ar) == 0 {
            return false;
        }
        ffi::lua_getinfo(l, c"f".as_ptr(), &mut ar);
        let f = ffi::lua_tocfunction(l, -1);
        ffi::lua_settop(l, -2);
        f
    };
    let (start, end) = library_text();
    running.is_some_and(|f| (start..end).contains(&(f as usize)))
}

/// The address range of this library's executable segment (where every C function it
/// hands to Lua lives), found once through the dynamic loader.
fn library_text() -> (usize, usize) {
    static TEXT: OnceLock<(usize, usize)> = OnceLock::new();
    *TEXT.get_or_init(|| {
        struct Search {
            anchor: usize,
            found: (usize, usize),
        }
        unsafe extern "C" fn visit(
            info: *mut libc::dl_phdr_info,
            _size: usize,
            data: *mut c_void,
        ) -> c_int {
            // SAFETY: `dl_iterate_phdr` passes a valid `info` whose `dlpi_phdr` holds
            // `dlpi_phnum` headers; `data` is the `Search` below, alive during the call.
            unsafe {
                let search = &mut *(data as *mut Search);
                let info = &*info;
                for i in 0..usize::from(info.dlpi_phnum) {
                    let ph = &*info.dlpi_phdr.add(i);
                    if ph.p_type != libc::PT_LOAD || ph.p_flags & libc::PF_X == 0 {
                        continue;
                    }
                    let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
                    let end = start.wrapping_add(ph.p_memsz as usize);
                    if (start..end).contains(&search.anchor) {
                        search.found = (start, end);
                        return 1;
                    }
                }
            }
            0
        }
        let ours: unsafe extern "C-unwind" fn(RawState, *mut ffi::lua_Debug) = hook;
        let mut search = Search {
            anchor: ours as usize,
            found: (0, 0),
        };
        // SAFETY: the callback follows `dl_iterate_phdr`'s contract and does not
        // unwind; `search` outlives the call.
        unsafe { libc::dl_iterate_phdr(Some(visit), &mut search as *mut Search as *mut c_void) };
        if search.found == (0, 0) {
            log::warn!("could not find this library's code; interrupts may fire inside it");
        }
        search.found
    })
}

/// The table that signals name interruptors by: a token is a slot index and that
/// slot's generation, so a handler can check it with atomics alone and reads no memory
/// that a forged or stale signal points at.
mod slots {
    use super::*;

    /// Slots for chunks running at once (one per running child thread).
    pub(super) const COUNT: usize = 1 << 14;
    const GENERATION_BITS: u32 = 16;
    const GENERATION_MASK: usize = (1 << GENERATION_BITS) - 1;

    struct Slot {
        /// The registering thread (`pthread_self`), 0 when free.
        owner: AtomicUsize,
        generation: AtomicUsize,
        interruptor: AtomicPtr<Interruptor>,
    }

    static TABLE: [Slot; COUNT] = [const {
        Slot {
            owner: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            interruptor: AtomicPtr::new(ptr::null_mut()),
        }
    }; COUNT];
    static NEXT: AtomicUsize = AtomicUsize::new(0);

    /// Index + 1 above the generation bits, so that no token is 0.
    fn encode(index: usize, generation: usize) -> usize {
        ((index + 1) << GENERATION_BITS) | (generation & GENERATION_MASK)
    }

    fn decode(token: usize) -> Option<(usize, usize)> {
        let index = (token >> GENERATION_BITS).checked_sub(1)?;
        (index < COUNT).then_some((index, token & GENERATION_MASK))
    }

    /// Takes a free slot for `interruptor`, run by `owner`; returns its token.
    pub(super) fn register(interruptor: &Interruptor, owner: libc::pthread_t) -> Option<usize> {
        let p = interruptor as *const Interruptor as *mut Interruptor;
        let start = NEXT.fetch_add(1, Ordering::Relaxed);
        for k in 0..COUNT {
            let index = (start + k) % COUNT;
            let slot = &TABLE[index];
            if slot
                .interruptor
                .compare_exchange(ptr::null_mut(), p, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.owner.store(owner as usize, Ordering::Release);
                return Some(encode(index, slot.generation.load(Ordering::Acquire)));
            }
        }
        None
    }

    /// Frees the slot of `token` (from `register`); its old tokens stop matching.
    pub(super) fn release(token: usize) {
        let Some((index, _)) = decode(token) else {
            return;
        };
        let slot = &TABLE[index];
        slot.owner.store(0, Ordering::Release);
        slot.generation.fetch_add(1, Ordering::AcqRel);
        slot.interruptor.store(ptr::null_mut(), Ordering::Release);
    }

    /// The interruptor a signal's value names, if it is the token of a live slot that
    /// the thread `me` registered; `None` for anything else. Async-signal-safe.
    pub(super) fn lookup(value: usize, me: libc::pthread_t) -> Option<*const Interruptor> {
        let (index, generation) = decode(value)?;
        let slot = &TABLE[index];
        if me as usize == 0 || slot.owner.load(Ordering::Acquire) != me as usize {
            return None;
        }
        if slot.generation.load(Ordering::Acquire) & GENERATION_MASK != generation {
            return None;
        }
        let p = slot.interruptor.load(Ordering::Acquire);
        (!p.is_null()).then_some(p as *const Interruptor)
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

    fn me() -> libc::pthread_t {
        // SAFETY: no preconditions.
        unsafe { libc::pthread_self() }
    }

    // The defect: the handler took any `SI_QUEUE` value from this process as the
    // address of an interruptor, so another library queueing the same signal number
    // (or junk) made it dereference a wild pointer.
    #[test]
    fn signal_values_not_queued_by_the_library_name_no_interruptor() {
        for junk in [
            0usize,
            1,
            0xdead_beef,
            usize::MAX,
            0x7fff_ffff,
            (slots::COUNT + 1) << 16, // an index past the table
            &JUNK_TARGET as *const u8 as usize,
        ] {
            assert!(
                slots::lookup(junk, me()).is_none(),
                "{junk:#x} was accepted"
            );
        }
    }
    static JUNK_TARGET: u8 = 0;

    #[test]
    fn a_live_slot_is_found_only_by_its_token_on_its_own_thread() {
        let interruptor = Interruptor::new(Module::Llthreads, Request::None);
        let token = slots::register(&interruptor, me()).expect("a free slot");
        let found = slots::lookup(token, me()).expect("the live slot");
        assert!(std::ptr::eq(found, &interruptor));
        // The same token on another thread: that thread's handler must not touch
        // this thread's state.
        let other = std::thread::spawn(move || slots::lookup(token, me()).is_none())
            .join()
            .unwrap();
        assert!(other, "another thread's handler accepted the token");
        // A neighbouring generation of the same slot is someone else's token.
        assert!(slots::lookup(token ^ 1, me()).is_none());
        slots::release(token);
    }

    #[test]
    fn a_stale_token_stops_matching_once_its_slot_is_released() {
        let first = Interruptor::new(Module::Llthreads, Request::None);
        let token = slots::register(&first, me()).expect("a free slot");
        slots::release(token);
        assert!(
            slots::lookup(token, me()).is_none(),
            "released slot still matched"
        );
        // Even when the slot is taken again, the old generation does not match.
        let mut reused = None;
        let second = Interruptor::new(Module::Llthreads, Request::None);
        let mut held = Vec::new();
        for _ in 0..slots::COUNT {
            let t = slots::register(&second, me()).expect("a free slot");
            if t >> 16 == token >> 16 {
                reused = Some(t);
                break;
            }
            held.push(t);
        }
        let reused = reused.expect("the slot came round again");
        assert_ne!(reused, token);
        assert!(
            slots::lookup(token, me()).is_none(),
            "stale generation matched"
        );
        assert!(slots::lookup(reused, me()).is_some());
        slots::release(reused);
        for t in held {
            slots::release(t);
        }
    }
}
