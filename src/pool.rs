//! A pool of parked OS threads, so that `start` rarely pays for creating one.
//!
//! Every job gets a thread of its own at once: an idle worker if there is one, else a
//! new thread. Jobs never queue behind each other, so a thread that blocks forever
//! blocks nobody else, exactly as with one OS thread per `start`. A worker that has
//! finished its job waits up to [`IDLE_TIMEOUT`] for another, then exits; at most
//! [`MAX_IDLE`] wait at once.
//!
//! Nothing of the pool outlives its users. Each Lua state that loaded the module
//! counts as one ([`add_user`], [`remove_user`]); while there is none, a finished
//! worker exits instead of parking. When the last user leaves, the parked workers are
//! told to exit and joined, so their thread-local storage is freed before the process
//! ends (a user's own `valgrind --leak-check=full` run is clean). A worker that exits
//! by itself leaves its handle behind to be joined, by the next worker to exit or by
//! the last user leaving. Workers still running a job (detached threads) go on; they
//! exit when done.
//!
//! A parked worker also does the library's background work, the [`IdleWork`] installed
//! with [`set_idle_work`] (the stock of prepared Lua states, `prepared.rs`), but only
//! once it has had no job for [`IDLE_WORK_AFTER`]: in a loop that starts threads back
//! to back the CPUs are already busy (the caller makes the next state while the last
//! child's worker closes its own), and work done ahead there only moves the queue. One
//! parked worker at a time is on duty for it ([`DUTY`]): sixteen workers parked
//! between two batches of sixteen threads would otherwise each wake for it, a wake-up
//! per thread. A worker busy with the work stays in line for jobs: a job that comes
//! for it ends the work at its next step (one state made, tens of microseconds,
//! about what starting a new thread instead would cost, and the pool does not grow).
//! The work's `release` runs when no parked worker is left: the last one timed out,
//! or the last user left and every parked worker is joined.
//!
//! A job never unwinds into a worker: a panic outside an entry point's barrier aborts
//! the process (see `barrier.rs`), so workers need no `catch_unwind` of their own.
//!
//! Workers are plain pthreads, not `std::thread`s: a standard thread costs about
//! 0.4 KiB that outlives nothing useful here (its handle, result packet and boxed
//! closure, plus the library's whole thread-local block, which its start-up touches),
//! and memory per live thread is measured against the C original's. For the same
//! reason a worker never touches a thread-local of the library on its own: see
//! `slot.rs` for the running chunk's pointers, and [`Mailbox`] for its waits. The idle
//! work is the one exception: `prepared.rs` makes states under `raw::protected`, whose
//! guard is a thread-local, so a worker that has done it keeps the library's block
//! until its thread exits. Only the worker on duty does it, after 10 ms without a job.

use std::ffi::c_void;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, PoisonError};
use std::time::Duration;

use parking_lot::Mutex;

use crate::wait;

/// Work for one thread, run once. It may give its worker back to the pool before its
/// last act through the [`Handback`] (see there).
pub type Job = Box<dyn for<'a> FnOnce(Handback<'a>) + Send + 'static>;

/// How long a finished worker waits for more work before its thread exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a parked worker waits for a job before it does the idle work: far longer
/// than the gaps of a loop that starts threads back to back (tens of microseconds).
/// Not shorter: with 1 ms, the timed wait alone (it hardly ever ran out) made such a
/// loop about 7 µs per thread slower on this 2-CPU VM, on 5.4 and LuaJIT alike (33 →
/// 40.5 µs, fastest of 8 runs each); with 10 ms it costs nothing measurable. A wait
/// that arms the next timer to fire on a CPU, sooner than its tick, most likely costs
/// the reprogramming of the timer hardware on arming and again on waking early.
const IDLE_WORK_AFTER: Duration = Duration::from_millis(10);

/// How long a worker back from its job watches for the next one before it sleeps.
const JOB_SPIN: Duration = Duration::from_micros(50);

/// Idle workers kept at most; beyond that a finished worker exits at once.
const MAX_IDLE: usize = 64;

/// Stack size of worker threads: the glibc default for `pthread_create` here, so that
/// C code recursing deeply in a child behaves as under the C original. Only touched
/// pages cost memory.
const STACK_SIZE: usize = 8 << 20;

enum Mail {
    Empty,
    Job(Job),
    /// A reserved worker that will get no job after all: back to the pool.
    Unused,
    /// The last user left: exit now.
    Quit,
}

/// Where a worker receives its next job.
struct Mailbox {
    /// The standard library's futex-based lock and condition variable, not
    /// parking_lot's: a thread that parks on those touches the library's thread-local
    /// block (see the module comment), and a new worker often waits for its first job.
    mail: std::sync::Mutex<Mail>,
    arrived: std::sync::Condvar,
    /// The worker's thread, for whoever joins it. Set before the worker can get any
    /// mail; taken by the worker itself when a job (or `Unused`) comes (see [`Home`]),
    /// else by whoever joins it.
    handle: Mutex<Option<Worker>>,
    /// Whether the worker parks after its job; not a thread made with a stack size of
    /// its own, which is for one job only.
    parks: bool,
    /// Set when mail is posted: a worker just back watches it a moment before it
    /// sleeps on the condition variable.
    posted: AtomicBool,
}

impl Mailbox {
    fn post(&self, mail: Mail) {
        *self.mail() = mail;
        self.posted.store(true, Ordering::Release);
        self.arrived.notify_one();
    }

    /// The mail slot, locked. A poisoned lock is taken as it is: nothing panics while
    /// holding it.
    fn mail(&self) -> std::sync::MutexGuard<'_, Mail> {
        self.mail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether mail waits (a job, `Unused` or `Quit`): it ends the idle work.
    fn has_mail(&self) -> bool {
        !matches!(*self.mail(), Mail::Empty)
    }

    fn new(parks: bool) -> Mailbox {
        Mailbox {
            mail: std::sync::Mutex::new(Mail::Empty),
            arrived: std::sync::Condvar::new(),
            handle: Mutex::new(None),
            parks,
            posted: AtomicBool::new(false),
        }
    }
}

/// Background work done by parked workers.
pub struct IdleWork {
    /// Does the work. It calls `stop` between steps and returns as soon as it says
    /// true (the worker has mail). It must not panic (see `barrier.rs`).
    pub run: fn(stop: &dyn Fn() -> bool),
    /// Frees what the work made; called when no parked worker is left: the last one
    /// timed out (a `run` may then be under way on a worker that just parked), or the
    /// last user left and every parked worker is joined (no `run` is).
    pub release: fn(),
}

static IDLE_WORK: OnceLock<IdleWork> = OnceLock::new();

/// Set while a parked worker is on duty for the idle work (see the module comment).
static DUTY: AtomicBool = AtomicBool::new(false);

/// The idle-work duty, held by one parked worker; given back when dropped.
struct Duty;

impl Duty {
    /// Takes the duty if no other worker has it.
    fn claim() -> Option<Duty> {
        DUTY.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .ok()
            .map(|_| Duty)
    }
}

impl Drop for Duty {
    fn drop(&mut self) {
        DUTY.store(false, Ordering::Release);
    }
}

/// Installs the idle work, once per process (later calls change nothing).
pub fn set_idle_work(work: IdleWork) {
    let _ = IDLE_WORK.set(work);
}

struct Pool {
    /// Parked workers, the most recently parked last (its stack is the warmest).
    idle: Vec<Arc<Mailbox>>,
    /// Threads of workers that exited (or are about to): joined later.
    exited: Vec<Worker>,
    /// Lua states that loaded the module and are still open.
    users: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    idle: Vec::new(),
    exited: Vec::new(),
    users: 0,
});

/// A Lua state loaded the module: workers park between jobs while it is open.
pub fn add_user() {
    POOL.lock().users += 1;
}

/// A state counted by [`add_user`] closed. When it was the last, the parked workers
/// exit and every worker that exited is joined before this returns.
pub fn remove_user() {
    let (idle, exited) = {
        let mut pool = POOL.lock();
        pool.users = pool.users.saturating_sub(1);
        if pool.users > 0 {
            return;
        }
        (
            std::mem::take(&mut pool.idle),
            std::mem::take(&mut pool.exited),
        )
    };
    for mailbox in &idle {
        mailbox.post(Mail::Quit);
    }
    let parked = idle.iter().filter_map(|m| m.handle.lock().take());
    for thread in parked.chain(exited) {
        thread.join();
    }
    log::debug!("last user gone: {} parked worker(s) ended", idle.len());
    if let Some(work) = IDLE_WORK.get() {
        (work.release)();
    }
}

/// A worker set aside for one job: getting one is the only step that can fail (the OS
/// may refuse a new thread), so callers reserve before giving up anything they own.
pub struct Reserved(Option<Arc<Mailbox>>);

/// Reserves a parked worker, or starts a new thread waiting for its first job. With a
/// `stack_size`, always a new thread with that stack, which exits after its job.
pub fn reserve(stack_size: Option<usize>) -> io::Result<Reserved> {
    if stack_size.is_none() {
        if let Some(mailbox) = POOL.lock().idle.pop() {
            return Ok(Reserved(Some(mailbox)));
        }
    }
    let mailbox = Arc::new(Mailbox::new(stack_size.is_none()));
    let thread = Worker::start(Arc::clone(&mailbox), stack_size.unwrap_or(STACK_SIZE))?;
    *mailbox.handle.lock() = Some(thread);
    Ok(Reserved(Some(mailbox)))
}

/// A worker's joinable OS thread.
struct Worker(libc::pthread_t);

impl Worker {
    /// Starts a thread with a stack of `stack_size` bytes that runs [`work`].
    fn start(mailbox: Arc<Mailbox>, stack_size: usize) -> io::Result<Worker> {
        extern "C" fn main(arg: *mut c_void) -> *mut c_void {
            // SAFETY: `arg` is the `Arc` that `start` turned into a pointer for this
            // thread alone, taken back exactly once. (A panic here cannot unwind out of
            // this `extern "C"` function: it aborts, as a panic outside a barrier must.)
            let mailbox = unsafe { Arc::from_raw(arg.cast_const().cast::<Mailbox>()) };
            work(mailbox);
            std::ptr::null_mut()
        }
        let check = |rc: libc::c_int| match rc {
            0 => Ok(()),
            e => Err(io::Error::from_raw_os_error(e)),
        };
        let arg = Arc::into_raw(mailbox);
        // SAFETY: (1) `attr` is initialised before use and destroyed once; (2) the new
        // thread takes `arg` over only when `pthread_create` succeeds, else it is
        // taken back here; (3) `thread` is written by a successful `pthread_create`.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            check(libc::pthread_attr_init(&mut attr))?;
            let mut thread: libc::pthread_t = 0;
            let rc = match libc::pthread_attr_setstacksize(&mut attr, stack_size) {
                0 => libc::pthread_create(&mut thread, &attr, main, arg.cast_mut().cast()),
                e => e,
            };
            libc::pthread_attr_destroy(&mut attr);
            if rc != 0 {
                drop(Arc::from_raw(arg));
            }
            check(rc).map(|()| Worker(thread))
        }
    }

    /// Waits for the thread to end.
    fn join(self) {
        // SAFETY: a joinable thread that nobody else joins: `Worker` is not `Clone`,
        // and `join` / `try_join` take it by value.
        unsafe { libc::pthread_join(self.0, std::ptr::null_mut()) };
    }

    /// Joins the thread if it has ended; gives it back if it still runs.
    fn try_join(self) -> Option<Worker> {
        // SAFETY: as in `join`.
        match unsafe { libc::pthread_tryjoin_np(self.0, std::ptr::null_mut()) } {
            libc::EBUSY => Some(self),
            _ => None,
        }
    }
}

impl Reserved {
    /// Runs `job` on the reserved worker.
    pub fn run(mut self, job: Job) {
        if let Some(mailbox) = self.0.take() {
            mailbox.post(Mail::Job(job));
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if let Some(mailbox) = self.0.take() {
            mailbox.post(Mail::Unused);
        }
    }
}

/// Lets a job hand its worker back to the pool before its last act.
pub struct Handback<'a> {
    home: &'a mut Home,
    next: &'a mut Option<Next>,
}

impl Handback<'_> {
    /// Parks the worker (or, when the pool keeps no more, leaves its thread to be
    /// joined), then runs `last`. Whoever `last` wakes finds the worker already back:
    /// a state that closes right after seeing the job done joins the worker when it
    /// is the pool's last user. After `last` the job must do nothing but return.
    pub fn then(self, last: impl FnOnce()) {
        *self.next = Some(give_back(self.home));
        last();
    }
}

/// What a worker keeps on its own stack while a job runs. A mailbox exists only while
/// the worker waits for mail: a live thread's memory is measured against the C
/// original's, and the box would cost every running job about 0.1 KiB.
struct Home {
    /// The worker's thread, for whoever joins it.
    handle: Option<Worker>,
    parks: bool,
}

/// What a worker does once its job is over.
enum Next {
    /// It is parked: wait for mail in this mailbox.
    Wait(Arc<Mailbox>),
    /// Its handle is with the pool: exit.
    Exit,
}

/// Parks the worker in a new mailbox if the pool has users and room, else leaves its
/// thread to be joined.
fn give_back(home: &mut Home) -> Next {
    let mailbox = home.parks.then(|| Arc::new(Mailbox::new(true)));
    let mut pool = POOL.lock();
    if let Some(mailbox) = mailbox.filter(|_| pool.users > 0 && pool.idle.len() < MAX_IDLE) {
        *mailbox.handle.lock() = home.handle.take();
        pool.idle.push(Arc::clone(&mailbox));
        return Next::Wait(mailbox);
    }
    exiting(&mut pool, home.handle.take());
    Next::Exit
}

/// Records that a worker whose thread is `handle` is about to exit, and joins the
/// threads of workers that already have.
fn exiting(pool: &mut Pool, handle: Option<Worker>) {
    pool.exited = std::mem::take(&mut pool.exited)
        .into_iter()
        .filter_map(Worker::try_join)
        .collect();
    pool.exited.extend(handle);
}

impl Home {
    /// Takes the worker's handle out of `mailbox`, which goes: the worker has its mail.
    fn leaving(mailbox: Arc<Mailbox>) -> Home {
        let handle = mailbox.handle.lock().take();
        Home {
            handle,
            parks: mailbox.parks,
        }
    }
}

/// A worker's life: run jobs until none comes within the idle timeout, or until the
/// last user leaves.
fn work(mut mailbox: Arc<Mailbox>) {
    // Reserved before it started: its first job (or `Unused`) is on the way.
    let mut got = receive(&mailbox, None);
    loop {
        let next = match got {
            Got::Job(job) => {
                let mut home = Home::leaving(mailbox);
                let mut next = None;
                job(Handback {
                    home: &mut home,
                    next: &mut next,
                });
                next.unwrap_or_else(|| give_back(&mut home))
            }
            Got::Unused => give_back(&mut Home::leaving(mailbox)),
            // The mailbox keeps the handle: whoever sent `Quit`, or `wait_parked`
            // when it timed out, takes it from there.
            Got::Quit | Got::Timeout => return,
        };
        match next {
            Next::Wait(parked) => {
                got = wait_parked(&parked);
                mailbox = parked;
            }
            Next::Exit => return,
        }
    }
}

/// Runs the idle work on a parked worker until it is done or mail comes; not when the
/// worker has already been reserved (mail is on the way) or the pool has no user.
fn idle_work(mailbox: &Arc<Mailbox>, work: &IdleWork) {
    {
        let pool = POOL.lock();
        if pool.users == 0 || !pool.idle.iter().any(|m| Arc::ptr_eq(m, mailbox)) {
            return;
        }
    }
    (work.run)(&|| mailbox.has_mail());
}

enum Got {
    Job(Job),
    Unused,
    Quit,
    Timeout,
}

/// Waits for mail, at most `timeout` (`None`: no limit).
fn receive(mailbox: &Mailbox, timeout: Option<Duration>) -> Got {
    let mut mail = mailbox.mail();
    loop {
        match std::mem::replace(&mut *mail, Mail::Empty) {
            Mail::Job(job) => return Got::Job(job),
            Mail::Unused => return Got::Unused,
            Mail::Quit => return Got::Quit,
            Mail::Empty => {}
        }
        match timeout {
            Some(t) => {
                let (guard, waited) = mailbox
                    .arrived
                    .wait_timeout(mail, t)
                    .unwrap_or_else(PoisonError::into_inner);
                mail = guard;
                if waited.timed_out() && matches!(*mail, Mail::Empty) {
                    return Got::Timeout;
                }
            }
            None => {
                mail = mailbox
                    .arrived
                    .wait(mail)
                    .unwrap_or_else(PoisonError::into_inner)
            }
        }
    }
}

/// Waits, parked, for the next mail; [`Got::Quit`] when the worker should exit.
fn wait_parked(mailbox: &Arc<Mailbox>) -> Got {
    // A thread that just finished is often started again at once (a loop of `new`,
    // `start`, `join`): watching a moment costs less than a sleep and a wake-up (tens
    // of microseconds on a VM), when the starter has a CPU of its own; the gauge
    // stops it when it has not.
    static PARKED_SPIN: wait::Gauge = wait::Gauge::new();
    PARKED_SPIN.spin(JOB_SPIN, None, || mailbox.posted.load(Ordering::Acquire));
    let mut timeout = IDLE_TIMEOUT;
    if let Some(work) = IDLE_WORK.get() {
        if let Some(_duty) = Duty::claim() {
            match receive(mailbox, Some(IDLE_WORK_AFTER)) {
                Got::Timeout => idle_work(mailbox, work),
                got => return got,
            }
            timeout -= IDLE_WORK_AFTER;
        }
    }
    match receive(mailbox, Some(timeout)) {
        Got::Timeout => {
            // Leave the idle list, unless a `reserve` (or the last user leaving) has
            // already taken this mailbox out of it: then mail is on the way.
            let mut pool = POOL.lock();
            if let Some(pos) = pool.idle.iter().position(|m| Arc::ptr_eq(m, mailbox)) {
                pool.idle.swap_remove(pos);
                let handle = mailbox.handle.lock().take();
                exiting(&mut pool, handle);
                let last = pool.idle.is_empty();
                drop(pool);
                // What the idle work keeps is for parked workers to hand out: with
                // none left, the process goes back to what it held before.
                if let (true, Some(work)) = (last, IDLE_WORK.get()) {
                    (work.release)();
                }
                return Got::Quit;
            }
            drop(pool);
            receive(mailbox, None)
        }
        got => got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    /// The pool is process-wide: tests that count users must not overlap.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn job(f: impl FnOnce() + Send + 'static) -> Job {
        Box::new(move |_: Handback<'_>| f())
    }

    #[test]
    fn a_running_job_costs_no_mailbox() {
        let _serial = SERIAL.lock();
        let reserved = reserve(None).unwrap();
        let mailbox = Arc::downgrade(reserved.0.as_ref().unwrap());
        let (tx, rx) = mpsc::channel();
        reserved.run(job(move || {
            // `run` drops its reference right after posting.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while mailbox.upgrade().is_some() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.send(mailbox.upgrade().is_none()).unwrap();
        }));
        assert!(
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            "the mailbox outlived its mail"
        );
    }

    #[test]
    fn every_job_runs_even_when_all_workers_are_blocked() {
        let _serial = SERIAL.lock();
        // Ten jobs that each wait for the last one: only possible if none queues
        // behind another.
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..10 {
            let rx = Arc::clone(&release_rx);
            let done = done_tx.clone();
            reserve(None).unwrap().run(job(move || {
                rx.lock().unwrap().recv().unwrap();
                done.send(()).unwrap();
            }));
        }
        for _ in 0..10 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..10 {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }

    #[test]
    fn a_worker_with_its_own_stack_size_runs_on_that_stack_and_never_parks() {
        let _serial = SERIAL.lock();
        add_user();
        // A 16 MiB array on the stack overflows the default 8 MiB, not this one.
        let (tx, rx) = mpsc::channel();
        reserve(Some(32 << 20)).unwrap().run(job(move || {
            let big = [1u8; 16 << 20];
            tx.send(std::hint::black_box(&big)[12345]).unwrap();
        }));
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            POOL.lock().idle.iter().all(|m| m.parks),
            "a worker with its own stack was parked"
        );
        remove_user();
    }

    #[test]
    fn a_reservation_dropped_unused_lets_its_thread_go() {
        let _serial = SERIAL.lock();
        // The worker must not wait forever for a job that never comes; it parks (or
        // exits) and can be reserved again.
        drop(reserve(None).unwrap());
        let (tx, rx) = mpsc::channel();
        reserve(None)
            .unwrap()
            .run(job(move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn finished_workers_are_reused() {
        let _serial = SERIAL.lock();
        add_user();
        // Sequential jobs, each submitted after the previous one's worker had time to
        // park: without reuse every job would need a new thread.
        let (tx, rx) = mpsc::channel();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..40 {
            let t = tx.clone();
            reserve(None)
                .unwrap()
                .run(job(move || t.send(std::thread::current().id()).unwrap()));
            threads.insert(rx.recv_timeout(Duration::from_secs(10)).unwrap());
            std::thread::sleep(Duration::from_millis(5));
        }
        remove_user();
        assert!(
            threads.len() <= 15,
            "40 jobs used {} threads",
            threads.len()
        );
    }

    /// Set by a thread-local's destructor: the worker's thread has ended (its
    /// thread-local storage is freed) when this is true.
    struct ExitFlag(&'static AtomicBool);
    impl Drop for ExitFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    thread_local! {
        static EXIT_FLAG: std::cell::RefCell<Option<ExitFlag>> = const { std::cell::RefCell::new(None) };
    }

    /// Runs a job that marks its thread, hands the worker back and then tells the
    /// test it is done; returns the flag set when that thread ends.
    fn parked_worker() -> &'static AtomicBool {
        let ended: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
        let (tx, rx) = mpsc::channel();
        reserve(None)
            .unwrap()
            .run(Box::new(move |handback: Handback<'_>| {
                EXIT_FLAG.with(|f| *f.borrow_mut() = Some(ExitFlag(ended)));
                handback.then(|| tx.send(()).unwrap());
            }));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
        ended
    }

    #[test]
    fn parked_workers_end_when_the_last_user_leaves() {
        let _serial = SERIAL.lock();
        add_user();
        add_user();
        let first = parked_worker();
        // One user left: the worker stays parked (it would wait two seconds).
        remove_user();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !first.load(Ordering::SeqCst),
            "a worker ended while a user remained"
        );
        // The job said "done" after its worker was parked: no sleep needed here for
        // `remove_user` to find and join it.
        remove_user();
        assert!(
            first.load(Ordering::SeqCst),
            "the parked worker is still alive"
        );
    }

    #[test]
    fn without_users_a_finished_worker_exits_and_is_joined_later() {
        let _serial = SERIAL.lock();
        let ended = parked_worker();
        // Nobody uses the pool: the worker did not park. Its thread is joined when
        // the next user leaves.
        add_user();
        remove_user();
        assert!(
            ended.load(Ordering::SeqCst),
            "the worker's thread was not joined"
        );
        assert!(POOL.lock().idle.is_empty());
    }

    // The idle work of these tests counts its runs and, while HOLD is set, lasts
    // until its worker gets mail. Installed once for the whole test binary (as
    // `prepared.rs` does for the module); other tests' workers run it too, which
    // costs them nothing while HOLD is clear.
    static IDLE_RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static IDLE_RELEASES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    static HOLD: AtomicBool = AtomicBool::new(false);

    fn counted_run(stop: &dyn Fn() -> bool) {
        IDLE_RUNS.fetch_add(1, Ordering::SeqCst);
        while HOLD.load(Ordering::SeqCst) && !stop() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    fn counted_release() {
        IDLE_RELEASES.fetch_add(1, Ordering::SeqCst);
    }

    /// Installs the counting idle work; waits until parked workers of earlier tests
    /// have had their turn at it, so that counts start from a quiet pool.
    fn quiet_counted_pool() {
        set_idle_work(IdleWork {
            run: counted_run,
            release: counted_release,
        });
        std::thread::sleep(IDLE_WORK_AFTER * 20);
    }

    /// Runs `n` jobs at once that end together, and waits until their workers are
    /// back (parked, as the pool has a user).
    fn park_together(n: usize) {
        let gate = Arc::new(std::sync::Barrier::new(n));
        let (tx, rx) = mpsc::channel();
        for _ in 0..n {
            let (gate, tx) = (Arc::clone(&gate), tx.clone());
            reserve(None)
                .unwrap()
                .run(Box::new(move |handback: Handback<'_>| {
                    gate.wait();
                    handback.then(|| tx.send(()).unwrap());
                }));
        }
        for _ in 0..n {
            rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }

    #[test]
    fn one_parked_worker_at_a_time_wakes_for_the_idle_work() {
        let _serial = SERIAL.lock();
        add_user();
        quiet_counted_pool();
        let before = IDLE_RUNS.load(Ordering::SeqCst);
        park_together(16);
        std::thread::sleep(IDLE_WORK_AFTER * 50);
        let runs = IDLE_RUNS.load(Ordering::SeqCst) - before;
        // One, or two when the scheduler held a worker back past the first one's
        // turn; without the duty every one of the sixteen would run it.
        assert!(
            (1..=3).contains(&runs),
            "16 parked workers ran it {runs} times"
        );
        let released = IDLE_RELEASES.load(Ordering::SeqCst);
        remove_user();
        assert_eq!(IDLE_RELEASES.load(Ordering::SeqCst), released + 1);
    }

    #[test]
    fn a_job_for_a_worker_busy_with_the_idle_work_ends_the_work_and_runs_there() {
        let _serial = SERIAL.lock();
        add_user();
        quiet_counted_pool();
        HOLD.store(true, Ordering::SeqCst);
        let before = IDLE_RUNS.load(Ordering::SeqCst);
        let (tx, rx) = mpsc::channel();
        let t = tx.clone();
        reserve(None)
            .unwrap()
            .run(job(move || t.send(std::thread::current().id()).unwrap()));
        let busy = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while IDLE_RUNS.load(Ordering::SeqCst) == before && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            IDLE_RUNS.load(Ordering::SeqCst) > before,
            "no idle work ran"
        );
        // The work would go on while HOLD is set: only the job's mail can end it.
        reserve(None)
            .unwrap()
            .run(job(move || tx.send(std::thread::current().id()).unwrap()));
        let next = rx.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(busy, next, "the job went to another thread");
        // The last user leaving posts `Quit` to a worker busy with the work again.
        while IDLE_RUNS.load(Ordering::SeqCst) < before + 2 && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        remove_user();
        HOLD.store(false, Ordering::SeqCst);
        assert!(POOL.lock().idle.is_empty());
    }
}
