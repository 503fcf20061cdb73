//! The thread record: what the parent's thread object and the OS thread share.
//!
//! One mutex guards the child's progress, one condition variable announces the end.
//! Because the child publishes "finished" itself (instead of the parent probing the OS
//! thread, as the C original does with `pthread_kill`), `alive`, `join(0)` and timed
//! joins see a finished-but-unjoined thread exactly as finished.

use std::ffi::c_int;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::interrupt::{self, Interruptor, Request};
use crate::names::Module;
use crate::raw::RawState;
use crate::wait::{self, WaitList, Waiter};

struct Progress {
    /// The OS thread running the chunk, from `enter` until `code_ended`: the only
    /// window in which an interrupt is delivered by signal.
    thread: Option<libc::pthread_t>,
    /// The chunk has returned: interrupts no longer apply.
    code_ended: bool,
    finished: bool,
    /// `lua_pcall` status of the chunk; meaningful once `finished`.
    status: c_int,
    /// Waiters of `join` and `select` on this thread, woken by `finish`.
    ends: WaitList,
}

pub struct Record {
    progress: Mutex<Progress>,
    done: Condvar,
    interruptor: Interruptor,
    /// The child's waiter while its chunk runs: `interrupt` wakes it.
    waiter: Arc<Waiter>,
}

/// How long a joiner watches for the end before it sleeps (see [`Record::wait_end`]).
const END_SPIN: Duration = Duration::from_micros(50);

/// How [`Record::wait_end`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    Finished,
    TimedOut,
    /// The waiting thread's interrupt request said to stop waiting.
    Interrupted,
}

impl Record {
    /// `pending` is an interrupt requested before `start`.
    pub fn new(module: Module, pending: Request) -> Record {
        Record {
            progress: Mutex::new(Progress {
                thread: None,
                code_ended: false,
                finished: false,
                status: 0,
                ends: WaitList::new(),
            }),
            done: Condvar::new(),
            interruptor: Interruptor::new(module, pending),
            waiter: Arc::new(Waiter::new()),
        }
    }

    /// Called on the child's thread just before its chunk runs.
    ///
    /// # Safety
    /// `state` is the child's state, used by this thread only, until `code_ended`.
    pub unsafe fn enter(&self, state: RawState) {
        let mut progress = self.progress.lock();
        // SAFETY: forwarded contract; the interruptor lives in `self`, which the
        // child holds (an `Arc`) until after `code_ended`.
        progress.thread = Some(unsafe { interrupt::enter(state, &self.interruptor) });
        // SAFETY: the waiter lives in `self` until after `code_ended` clears it.
        unsafe { wait::set_current(&self.waiter) };
    }

    /// Records an interrupt request and, while the chunk runs, signals its thread.
    /// Does nothing once the chunk has returned.
    pub fn interrupt(&self, request: Request) {
        let progress = self.progress.lock();
        if progress.code_ended {
            return;
        }
        self.interruptor.set(request);
        if let (Some(thread), Request::Once | Request::Always) = (progress.thread, request) {
            // The child clears `thread` under this lock before its thread moves on,
            // so the thread is alive and still running this chunk.
            interrupt::deliver(thread, &self.interruptor);
        }
        // A child blocked in a wait of ours checks its request when woken.
        self.waiter.wake();
    }

    /// Called on the child's thread when its chunk has returned: from now on nobody
    /// interrupts it, and its hook is gone.
    ///
    /// # Safety
    /// The same thread and state as `enter`.
    pub unsafe fn code_ended(&self, state: RawState) {
        let mut progress = self.progress.lock();
        progress.thread = None;
        progress.code_ended = true;
        wait::clear_current();
        // SAFETY: forwarded contract.
        unsafe { interrupt::leave(state, &self.interruptor) };
    }

    /// Called by the child as its last act on the record.
    pub fn finish(&self, status: c_int) {
        let mut progress = self.progress.lock();
        progress.thread = None;
        progress.code_ended = true;
        progress.finished = true;
        progress.status = status;
        let ends = progress.ends.take_all();
        drop(progress);
        self.done.notify_all();
        wait::wake_all(ends);
    }

    /// Whether the child has finished; if not, with `register`, adds that waiter to
    /// those woken when it does.
    pub fn poll_end(&self, register: Option<&Arc<Waiter>>) -> bool {
        let mut progress = self.progress.lock();
        if !progress.finished {
            if let Some(w) = register {
                progress.ends.register(w);
            }
        }
        progress.finished
    }

    /// Takes `w` off the waiters of the end (every one is woken at the end, so there
    /// is nothing to pass on).
    pub fn leave_end(&self, w: &Arc<Waiter>) {
        self.progress.lock().ends.remove(w);
    }

    /// Waits, with the calling thread's waiter, until finished or `deadline`
    /// (`None`: no limit). `interrupted` is asked before each park.
    ///
    /// A short chunk ends within microseconds of its start: watching a moment first
    /// costs less than a sleep and a wake-up (tens of microseconds on a VM), when the
    /// child has a CPU of its own. `gauge` is the caller's kind of join (threads,
    /// pool tasks: they run different work), which stops the watching when it has
    /// lately not paid.
    pub fn wait_end(
        &self,
        gauge: &wait::Gauge,
        deadline: Option<Instant>,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Ended {
        if self.poll_end(None) {
            return Ended::Finished;
        }
        if gauge.spin(END_SPIN, deadline, || self.is_finished()) {
            return Ended::Finished;
        }
        let w = wait::current();
        let ended = loop {
            if self.poll_end(Some(&w)) {
                break Ended::Finished;
            }
            if interrupted() {
                break Ended::Interrupted;
            }
            if wait::expired(deadline) {
                break Ended::TimedOut;
            }
            w.park(deadline);
        };
        self.leave_end(&w);
        ended
    }

    pub fn is_finished(&self) -> bool {
        self.progress.lock().finished
    }

    /// Waits until finished or `timeout` passes (`None`: no limit). Returns whether the
    /// child has finished.
    pub fn wait(&self, timeout: Option<Duration>) -> bool {
        let mut progress = self.progress.lock();
        match timeout {
            None => {
                while !progress.finished {
                    self.done.wait(&mut progress);
                }
            }
            Some(timeout) => {
                // A timeout too large for `Instant` means no limit in practice.
                let deadline = Instant::now().checked_add(timeout);
                while !progress.finished {
                    match deadline {
                        Some(deadline) => {
                            if self.done.wait_until(&mut progress, deadline).timed_out() {
                                break;
                            }
                        }
                        None => self.done.wait(&mut progress),
                    }
                }
            }
        }
        progress.finished
    }

    /// The chunk's `lua_pcall` status (0 when it returned normally).
    pub fn status(&self) -> c_int {
        self.progress.lock().status
    }
}
