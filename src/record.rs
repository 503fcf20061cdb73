//! The thread record: what the parent's thread object and the OS thread share.
//!
//! One mutex guards the child's progress, one condition variable announces the end.
//! Because the child publishes "finished" itself (instead of the parent probing the OS
//! thread, as the C original does with `pthread_kill`), `alive`, `join(0)` and timed
//! joins see a finished-but-unjoined thread exactly as finished.

use std::ffi::c_int;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::ffi::RawState;

/// The child's state pointer while its code may still run, so `interrupt` can reach it.
#[derive(Clone, Copy)]
struct Running(RawState);

// SAFETY: the pointer is only dereferenced (by `lua_sethook`, which Lua allows from
// other threads) while the record's mutex is held and the child has not yet declared
// its code ended; the child clears it under the same mutex before closing the state.
unsafe impl Send for Running {}

struct Progress {
    running: Option<Running>,
    finished: bool,
    /// `lua_pcall` status of the chunk; meaningful once `finished`.
    status: c_int,
}

pub struct Record {
    progress: Mutex<Progress>,
    done: Condvar,
}

impl Record {
    pub fn new(state: RawState) -> Record {
        Record {
            progress: Mutex::new(Progress {
                running: Some(Running(state)),
                finished: false,
                status: 0,
            }),
            done: Condvar::new(),
        }
    }

    /// Runs `f` on the child's state if its code may still be running; the lock is
    /// held meanwhile, so the child cannot close the state under `f`.
    pub fn with_running_state(&self, f: impl FnOnce(RawState)) {
        let progress = self.progress.lock();
        if let Some(Running(state)) = progress.running {
            f(state);
        }
    }

    /// Called by the child when its chunk has returned: from now on nobody else may
    /// touch its state.
    pub fn code_ended(&self) {
        self.progress.lock().running = None;
    }

    /// Called by the child as its last act on the record.
    pub fn finish(&self, status: c_int) {
        let mut progress = self.progress.lock();
        progress.running = None;
        progress.finished = true;
        progress.status = status;
        drop(progress);
        self.done.notify_all();
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
