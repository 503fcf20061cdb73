//! The one place a thread of ours blocks: channel sends and receives, `select`,
//! `sleep` and `join` all wait through a [`Waiter`].
//!
//! A waiter belongs to one OS thread at a time. Something that can be waited on (a
//! channel's receive or send side, a thread record's end) keeps a [`WaitList`] of the
//! waiters registered with it, under its own lock. A blocking operation registers the
//! thread's waiter with each source it waits on, checks its condition again under that
//! source's lock, then parks; a source whose condition comes true takes one waiter off
//! its list (or all of them) and wakes it. Registration and the check happen under the
//! same lock as the change that makes the condition true, so no wake-up is lost; the
//! "notified" flag is sticky, so a wake that comes before the park is not lost either.
//!
//! A child's waiter is owned by its thread record, so that `interrupt()` can wake a
//! child blocked anywhere; the child makes it this thread's current waiter while its
//! chunk runs ([`set_current`]). Other threads (the host's) get a fresh waiter for each
//! blocking operation.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::slot::ThreadSlot;

const IDLE: u8 = 0;
const NOTIFIED: u8 = 1;
const PARKED: u8 = 2;

/// How long [`Waiter::spin`] watches for a wake-up before a blocking operation parks
/// its thread. A wake-up that comes this soon costs no system call on either side; a
/// thread that parks and is woken again costs two, and the latency of a scheduler
/// round trip.
pub const SPIN: Duration = Duration::from_micros(5);

/// The CPUs this process may use.
fn cpus() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How many waiters of one side of a source may be on their way at once: woken, and
/// not back at the source's lock yet. More than there are CPUs to run them would only
/// queue for a CPU, and most would find that the first ones took what they were
/// woken for.
pub fn wake_limit() -> usize {
    cpus()
}

/// Threads spinning now, in the whole process.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// A turn to spin: at most one thread per CPU spins at a time; the others park at
/// once. With many more waiting threads than CPUs (8 producers and 8 consumers on 2
/// CPUs), unlimited spinners took most of the CPU from the threads they waited for.
struct SpinTurn;

impl SpinTurn {
    fn take() -> Option<SpinTurn> {
        if SPINNING.fetch_add(1, Ordering::Relaxed) < cpus() {
            Some(SpinTurn)
        } else {
            SPINNING.fetch_sub(1, Ordering::Relaxed);
            None
        }
    }
}

impl Drop for SpinTurn {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Watches `ready` for at most [`SPIN`] (never past `deadline`) without giving up the
/// CPU or taking a lock, when it is this thread's turn to spin. Returns whether it
/// came true.
pub fn spin_until(deadline: Option<Instant>, ready: impl Fn() -> bool) -> bool {
    spin(SPIN, deadline, &ready) == Spun::Ready
}

/// How a spin ended.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Spun {
    /// The condition came true (or already was).
    Ready,
    /// It did not within the whole limit.
    Missed,
    /// It did not, and the spin said nothing about the limit: another thread had the
    /// turn, or the deadline came first.
    Cut,
}

fn spin(limit: Duration, deadline: Option<Instant>, ready: &dyn Fn() -> bool) -> Spun {
    if ready() {
        return Spun::Ready;
    }
    let Some(_turn) = SpinTurn::take() else {
        return Spun::Cut;
    };
    let mut end = Instant::now() + limit;
    let mut cut = false;
    if let Some(d) = deadline {
        if d < end {
            end = d;
            cut = true;
        }
    }
    let backoff = crossbeam_utils::Backoff::new();
    loop {
        // At most 64 pauses between looks (the backoff's ceiling): a few hundred
        // nanoseconds, so what comes true is seen at once, not a batch of backoffs
        // (microseconds) later.
        backoff.spin();
        if ready() {
            return Spun::Ready;
        }
        if Instant::now() >= end {
            return if cut { Spun::Cut } else { Spun::Missed };
        }
    }
}

/// One place that spins for long waits (a joiner for a thread's end, a parked worker
/// for its next job), and what spinning there has lately been worth.
///
/// A spin pays only when the awaited thread runs on another CPU meanwhile. On an idle
/// machine, a loop of `new`, `start`, `join` that watches for 50 µs before each sleep
/// ran in under half the time; with no CPU to spare (other tenants, `taskset -c 0`) the
/// same spins took the CPU from the awaited thread and made the loop three times
/// slower. The spin limit ([`SpinTurn`]) counts this process's spinners, not the
/// machine's load, so the gauge judges by results: after a spin that ran out, this
/// place skips the next 1, 3, 7, ... waits (up to 127) before it tries
/// again; a spin that paid resets it.
pub struct Gauge {
    /// Spins in a row that ran out, capped at [`Gauge::MAX_MISSES`].
    misses: AtomicU32,
    /// Waits still to go without spinning.
    skip: AtomicU32,
}

impl Gauge {
    /// So at most 127 waits are skipped between two tries: with a 50 µs spin, under
    /// 0.4 µs a wait when spins never pay.
    const MAX_MISSES: u32 = 7;

    pub const fn new() -> Gauge {
        Gauge {
            misses: AtomicU32::new(0),
            skip: AtomicU32::new(0),
        }
    }

    /// [`spin_until`] for at most `limit`, unless spins here have lately run out; then
    /// only a look at `ready`. The counters are updated without a lock: two threads at
    /// one place may both try, or both skip, which costs one spin or one sleep, never a
    /// lost wake-up (the caller parks and is woken as without a spin).
    pub fn spin(
        &self,
        limit: Duration,
        deadline: Option<Instant>,
        ready: impl Fn() -> bool,
    ) -> bool {
        // A wait over before it starts (a task joined after it ended) says nothing of
        // what spinning is worth here. Counted as a spin that paid, it reset the gauge:
        // with such waits between long ones, every long one spun again.
        if ready() {
            return true;
        }
        if !self.tries() {
            return ready();
        }
        let spun = spin(limit, deadline, &ready);
        self.record(spun);
        spun == Spun::Ready
    }

    /// Whether this wait may spin; if not, one fewer wait is left to skip.
    fn tries(&self) -> bool {
        // `fetch_update` fails only when nothing is left to skip. Two threads racing
        // here lose at most one decrement, which delays the next try by one wait.
        self.skip
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
    }

    fn record(&self, spun: Spun) {
        match spun {
            Spun::Ready => self.misses.store(0, Ordering::Relaxed),
            Spun::Missed => {
                let m = (self.misses.load(Ordering::Relaxed) + 1).min(Gauge::MAX_MISSES);
                self.misses.store(m, Ordering::Relaxed);
                self.skip.store((1 << m) - 1, Ordering::Relaxed);
            }
            Spun::Cut => {}
        }
    }
}

impl Default for Gauge {
    fn default() -> Gauge {
        Gauge::new()
    }
}

/// One thread's means to sleep until woken.
pub struct Waiter {
    state: AtomicU8,
    lock: Mutex<()>,
    cv: Condvar,
}

impl Default for Waiter {
    fn default() -> Self {
        Waiter::new()
    }
}

impl Waiter {
    pub const fn new() -> Waiter {
        Waiter {
            state: AtomicU8::new(IDLE),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        }
    }

    /// Wakes the thread parked on this waiter, or makes its next park return at once.
    pub fn wake(&self) {
        if self.state.swap(NOTIFIED, Ordering::SeqCst) == PARKED {
            // The parker holds the lock from its switch to PARKED until it sleeps on
            // the condition variable, so taking the lock here means it sleeps now.
            drop(self.lock.lock());
            self.cv.notify_one();
        }
    }

    /// Forgets a wake-up that nobody waited for. Only the owning thread calls it, at
    /// the start of a blocking operation, before it registers anywhere.
    pub fn reset(&self) {
        self.state.store(IDLE, Ordering::SeqCst);
    }

    /// Takes a pending wake-up, if any.
    fn take(&self) -> bool {
        self.state
            .compare_exchange(NOTIFIED, IDLE, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Watches for a wake-up for at most [`SPIN`] (never past `deadline`), without
    /// giving up the CPU, when it is this thread's turn to spin (see [`spin_until`]).
    /// Returns whether one came (and takes it).
    pub fn spin(&self, deadline: Option<Instant>) -> bool {
        spin_until(deadline, || self.state.load(Ordering::SeqCst) == NOTIFIED) && self.take()
    }

    /// Sleeps until woken or until `deadline` (`None`: no limit). Returns whether it
    /// was woken (the wake-up is taken). Spurious returns are possible only as
    /// `true`: callers re-check what they wait for.
    pub fn park(&self, deadline: Option<Instant>) -> bool {
        if self.take() {
            return true;
        }
        let mut guard = self.lock.lock();
        if self
            .state
            .compare_exchange(IDLE, PARKED, Ordering::SeqCst, Ordering::SeqCst)
            .is_err()
        {
            // Only the owner moves the state away from NOTIFIED: a wake-up came.
            self.state.store(IDLE, Ordering::SeqCst);
            return true;
        }
        loop {
            let timed_out = match deadline {
                Some(d) => self.cv.wait_until(&mut guard, d).timed_out(),
                None => {
                    self.cv.wait(&mut guard);
                    false
                }
            };
            if self.take() {
                return true;
            }
            if timed_out {
                // PARKED back to IDLE, unless a wake-up came in between.
                return self.state.swap(IDLE, Ordering::SeqCst) == NOTIFIED;
            }
        }
    }
}

// The waiter of the chunk running on this thread: the address of an `Arc` held by its
// record, or null outside a chunk of ours. Ordinary context only (never read from a
// signal handler). In a thread-specific slot, not a thread-local (see `slot.rs`).
thread_local! {
    static FALLBACK: Cell<*const c_void> = const { Cell::new(std::ptr::null()) };
}
static CURRENT: ThreadSlot = ThreadSlot::new(&FALLBACK);

/// Makes `waiter` this thread's waiter until [`clear_current`].
///
/// # Safety
/// `waiter` stays alive and in place until this thread calls [`clear_current`].
pub unsafe fn set_current(waiter: &Arc<Waiter>) {
    CURRENT.set((waiter as *const Arc<Waiter>).cast());
}

pub fn clear_current() {
    CURRENT.set(std::ptr::null());
}

/// The waiter a blocking operation on this thread uses: the chunk's own, or a fresh
/// one on a thread that runs no chunk of ours. Its pending wake-up is cleared.
pub fn current() -> Arc<Waiter> {
    let ptr = CURRENT.get().cast::<Arc<Waiter>>();
    // SAFETY: non-null only between `set_current` and `clear_current`, during which
    // the caller of `set_current` keeps the `Arc` alive and in place.
    let waiter = match unsafe { ptr.as_ref() } {
        Some(w) => Arc::clone(w),
        None => Arc::new(Waiter::new()),
    };
    waiter.reset();
    waiter
}

/// A deadline `timeout` from now; `None` (no limit) when that is past what `Instant`
/// can hold.
pub fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// Whether `deadline` has passed.
pub fn expired(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|d| Instant::now() >= d)
}

/// Waiters registered with one source, in the order they came.
#[derive(Default)]
pub struct WaitList {
    waiters: VecDeque<Arc<Waiter>>,
}

impl WaitList {
    pub const fn new() -> WaitList {
        WaitList {
            waiters: VecDeque::new(),
        }
    }

    /// Adds `w` unless it is there already.
    pub fn register(&mut self, w: &Arc<Waiter>) {
        if !self.contains(w) {
            self.waiters.push_back(Arc::clone(w));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    pub fn contains(&self, w: &Arc<Waiter>) -> bool {
        self.waiters.iter().any(|x| Arc::ptr_eq(x, w))
    }

    /// Removes `w`; false when it was not there (a source took it off to wake it).
    pub fn remove(&mut self, w: &Arc<Waiter>) -> bool {
        match self.waiters.iter().position(|x| Arc::ptr_eq(x, w)) {
            Some(pos) => {
                self.waiters.remove(pos);
                true
            }
            None => false,
        }
    }

    /// Takes the longest-waiting waiter off the list, for the caller to wake once it
    /// has released its lock.
    pub fn pop(&mut self) -> Option<Arc<Waiter>> {
        self.waiters.pop_front()
    }

    /// Takes every waiter off the list, for the caller to wake.
    pub fn take_all(&mut self) -> VecDeque<Arc<Waiter>> {
        std::mem::take(&mut self.waiters)
    }
}

/// Wakes each waiter of `list` (taken off a source's list under its lock).
pub fn wake_all(list: VecDeque<Arc<Waiter>>) {
    for w in list {
        w.wake();
    }
}

/// Sleeps until `deadline` (`None`: until interrupted). `interrupted` is asked before
/// sleeping and after every wake-up; returns `true` when it said so, `false` when the
/// time ran out.
pub fn sleep(deadline: Option<Instant>, interrupted: &mut dyn FnMut() -> bool) -> bool {
    let waiter = current();
    loop {
        if interrupted() {
            return true;
        }
        if expired(deadline) {
            return false;
        }
        waiter.park(deadline);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which of `outcomes.len()` waits at one gauge spin, when the spins that happen
    /// end as `outcomes` says in turn (the outcome of a skipped wait is not used).
    fn tries(gauge: &Gauge, outcomes: &[Spun]) -> Vec<usize> {
        let mut spun = Vec::new();
        for (i, &o) in outcomes.iter().enumerate() {
            if gauge.tries() {
                gauge.record(o);
                spun.push(i);
            }
        }
        spun
    }

    #[test]
    fn a_gauge_backs_off_where_spins_run_out_and_still_tries_now_and_then() {
        let g = Gauge::new();
        let spun = tries(&g, &[Spun::Missed; 1000]);
        // Skips of 1, 3, 7, ..., 127 after each miss; then one try in 128 for ever.
        assert_eq!(&spun[..9], &[0, 2, 6, 14, 30, 62, 126, 254, 382]);
        assert_eq!(spun.len(), 9 + (1000 - 383) / 128);
    }

    #[test]
    fn a_spin_that_pays_resets_the_gauge() {
        let g = Gauge::new();
        assert_eq!(tries(&g, &[Spun::Missed; 31]), [0, 2, 6, 14, 30]);
        // 31 waits skipped, then the next try pays: every wait spins again...
        assert_eq!(tries(&g, &[Spun::Ready; 36]), [31, 32, 33, 34, 35]);
        // ... and a miss skips one wait only.
        assert_eq!(tries(&g, &[Spun::Missed, Spun::Ready, Spun::Ready]), [0, 2]);
    }

    #[test]
    fn waits_over_before_they_start_do_not_reset_a_gauge() {
        // Each round: one wait that never comes true (a task still running), then two
        // already over (tasks finished by the time they are joined). The long waits
        // must back off as if the short ones were not there.
        let g = Gauge::new();
        let limit = Duration::from_micros(20);
        let mut spun = 0;
        for _ in 0..300 {
            let looks = std::cell::Cell::new(0u32);
            g.spin(limit, None, || {
                looks.set(looks.get() + 1);
                false
            });
            // A skipped wait looks once or twice; a spin looks all along its limit.
            if looks.get() > 2 {
                spun += 1;
            }
            assert!(g.spin(limit, None, || true));
            assert!(g.spin(limit, None, || true));
        }
        // Back-off alone allows 9 spins in 300 waits; one more for a spin another
        // test's spinner cut short is plenty.
        assert!(spun <= 12, "{spun} of 300 long waits spun");
    }

    #[test]
    fn a_spin_cut_short_says_nothing_about_the_place() {
        let g = Gauge::new();
        // Cut spins (another thread's turn, a near deadline) neither back off nor reset.
        assert_eq!(tries(&g, &[Spun::Cut; 5]), [0, 1, 2, 3, 4]);
        assert_eq!(
            tries(&g, &[Spun::Missed, Spun::Cut, Spun::Cut, Spun::Missed]),
            [0, 2, 3]
        );
        assert_eq!(tries(&g, &[Spun::Cut; 4]), [3]);
    }

    #[test]
    fn a_wake_before_the_park_is_not_lost() {
        let w = Waiter::new();
        w.wake();
        assert!(w.park(Some(Instant::now() + Duration::from_secs(5))));
    }

    #[test]
    fn park_times_out_without_a_wake() {
        let w = Waiter::new();
        let t0 = Instant::now();
        assert!(!w.park(Some(t0 + Duration::from_millis(20))));
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_wake_from_another_thread_ends_the_park() {
        let w = Arc::new(Waiter::new());
        let w2 = Arc::clone(&w);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w2.wake();
        });
        assert!(w.park(Some(Instant::now() + Duration::from_secs(10))));
        t.join().unwrap();
    }

    #[test]
    fn the_wait_list_pops_in_order_and_removes_once() {
        let (a, b) = (Arc::new(Waiter::new()), Arc::new(Waiter::new()));
        let mut list = WaitList::new();
        list.register(&a);
        list.register(&b);
        list.register(&a);
        assert!(Arc::ptr_eq(&list.pop().unwrap(), &a));
        assert!(!list.remove(&a));
        assert!(list.remove(&b));
        assert!(list.pop().is_none());
    }
}
