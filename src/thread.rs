//! The parent's side of a thread: its flags and the lifecycle of the four modes.
//!
//! | detached | joinable | `join` gives          | child state closed by | on collection     |
//! |----------|----------|-----------------------|-----------------------|-------------------|
//! | false    | false    | `true`                | the child             | waits             |
//! | false    | true     | `true, results...`    | the parent, in `join` | waits, then frees |
//! | true     | false    | refused               | the child             | nothing           |
//! | true     | true     | `true`                | the child             | lets it go        |
//!
//! Threads come from a pool (`pool.rs`), so there is no OS thread to join or detach:
//! the record tells when the child is done, its own state closed where it owns it.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::child::{self, Owner};
use crate::interrupt::{self, Request};
use crate::names::{Module, ThreadName};
use crate::pool;
use crate::record::{Ended, Record};
use crate::state::ChildState;
use crate::wait;

/// Why `join` or `alive` refused to look at the thread (messages as in COMPAT.md).
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    NotStarted,
    Detached,
    AlreadyJoined,
}

impl Refusal {
    pub fn message(self) -> &'static str {
        match self {
            Refusal::NotStarted => "Can't join a thread that hasn't be started.",
            Refusal::Detached => "Can't join a thread that has been detached.",
            Refusal::AlreadyJoined => "Can't join a thread that has already been joined.",
        }
    }
}

pub enum StartError {
    AlreadyStarted,
    Os(io::Error),
}

/// What a successful wait in `join` produced.
pub enum Joined {
    /// Still running when the timeout passed.
    Timeout,
    /// Finished; the child closed its own state.
    Closed,
    /// Finished; the parent now owns the state, results (or error) on its stack.
    State(ChildState, std::ffi::c_int),
    /// The calling chunk was interrupted while it waited, or before it took a finished
    /// thread's results: raise this module's `interrupted_error`. The thread joined
    /// stays joinable.
    Interrupted(Module),
}

/// What `spawn` and `new{...}` add to a thread; a thread of `new(code, ...)` has none.
#[derive(Default)]
pub struct Extra {
    /// The OS thread's name while it runs.
    pub name: Option<ThreadName>,
    /// The OS thread's own stack size, instead of a pooled worker's.
    pub stack_size: Option<usize>,
    /// `start()`'s modes when it is called without arguments.
    pub detached: Option<bool>,
    pub joinable: Option<bool>,
}

pub struct Thread {
    /// The module that made it: names the interrupt error.
    module: Module,
    started: bool,
    detached: bool,
    joinable: bool,
    joined: bool,
    /// Owned here before `start`, and after it in the attached joinable mode.
    state: Option<ChildState>,
    record: Option<Arc<Record>>,
    /// An interrupt requested before `start`.
    pending: Request,
    /// Boxed: most threads have none, and the object stays small.
    extra: Option<Box<Extra>>,
}

impl Thread {
    pub fn new(module: Module, state: ChildState, extra: Option<Box<Extra>>) -> Thread {
        Thread {
            module,
            started: false,
            detached: false,
            joinable: false,
            joined: false,
            state: Some(state),
            record: None,
            pending: Request::None,
            extra,
        }
    }

    /// Made by `spawn` or `new{...}`: its results may hold functions.
    pub fn copies_functions(&self) -> bool {
        self.extra.is_some()
    }

    /// The name given to the thread, if any.
    pub fn name(&self) -> Option<&ThreadName> {
        self.extra.as_ref().and_then(|e| e.name.as_ref())
    }

    /// `start()`'s modes when called without arguments: the options' or the
    /// contract's (attached and joinable).
    pub fn default_modes(&self) -> (bool, bool) {
        let extra = self.extra.as_deref();
        let detached = extra.and_then(|e| e.detached).unwrap_or(false);
        let joinable = extra.and_then(|e| e.joinable).unwrap_or(!detached);
        (detached, joinable)
    }

    pub fn started(&self) -> bool {
        self.started
    }
    pub fn detached(&self) -> bool {
        self.detached
    }
    pub fn joinable(&self) -> bool {
        self.joinable
    }

    pub fn start(&mut self, detached: bool, joinable: bool) -> Result<(), StartError> {
        if self.started {
            return Err(StartError::AlreadyStarted);
        }
        // Reserve the OS thread first: if the OS refuses one, nothing is given up and
        // `start` can be tried again.
        let stack_size = self.extra.as_ref().and_then(|e| e.stack_size);
        let worker = pool::reserve(stack_size).map_err(|e| {
            log::warn!("could not create a thread: {e}");
            StartError::Os(e)
        })?;
        let Some(state) = self.state.take() else {
            return Err(StartError::AlreadyStarted);
        };
        let record = Arc::new(Record::new(self.module, self.pending));
        let (owner, kept) = if !detached && joinable {
            (Owner::Parent(state.raw()), Some(state))
        } else {
            (Owner::Child(state), None)
        };
        let name = self.name().map(|n| Box::new(*n));
        child::spawn(worker, owner, Arc::clone(&record), name);
        self.started = true;
        self.detached = detached;
        self.joinable = joinable;
        self.state = kept;
        self.record = Some(record);
        Ok(())
    }

    fn check_joinable(&self) -> Result<&Arc<Record>, Refusal> {
        if !self.started {
            return Err(Refusal::NotStarted);
        }
        if self.detached && !self.joinable {
            return Err(Refusal::Detached);
        }
        if self.joined {
            return Err(Refusal::AlreadyJoined);
        }
        self.record.as_ref().ok_or(Refusal::NotStarted)
    }

    /// `None` waits as long as it takes.
    pub fn join(&mut self, timeout: Option<Duration>) -> Result<Joined, Refusal> {
        /// What watching before a sleep has lately been worth in thread joins.
        static JOIN_SPIN: wait::Gauge = wait::Gauge::new();
        let record = self.check_joinable()?;
        let finished = match timeout {
            Some(t) if t.is_zero() => record.is_finished(),
            _ => {
                let deadline = timeout.and_then(wait::deadline_after);
                let mut module = None;
                let mut interrupted = || {
                    module = interrupt::claim_here();
                    module.is_some()
                };
                match record.wait_end(&JOIN_SPIN, deadline, &mut interrupted) {
                    Ended::Finished => true,
                    Ended::TimedOut => false,
                    Ended::Interrupted => {
                        return Ok(Joined::Interrupted(module.unwrap_or(self.module)))
                    }
                }
            }
        };
        if !finished {
            return Ok(Joined::Timeout);
        }
        // The last moment the results are still the thread's: an interrupt of the
        // calling code is delivered here rather than after they are taken, when it
        // would drop them.
        if let Some(module) = interrupt::claim_here() {
            return Ok(Joined::Interrupted(module));
        }
        let status = record.status();
        self.joined = true;
        Ok(match self.state.take() {
            Some(state) => Joined::State(state, status),
            None => Joined::Closed,
        })
    }

    /// Takes back the state `join` gave when its results could not be copied out
    /// (the joining state ran out of memory): the thread is joinable again, with the
    /// same results.
    pub fn give_back(&mut self, state: ChildState) {
        self.state = Some(state);
        self.joined = false;
    }

    /// The record to wait on for this thread's end (`select`), with the refusals of
    /// `join`.
    pub fn end_source(&self) -> Result<Arc<Record>, Refusal> {
        self.check_joinable().map(Arc::clone)
    }

    pub fn alive(&self) -> Result<bool, Refusal> {
        Ok(!self.check_joinable()?.is_finished())
    }

    /// Asks the child to raise `interrupted_error` (once, or on every event) or stops
    /// asking. Before `start` the request waits for the thread to run; once the
    /// child's code has finished it does nothing.
    pub fn interrupt(&mut self, request: Request) {
        match &self.record {
            None => self.pending = request,
            Some(record) => record.interrupt(request),
        }
    }
}

/// Collection, per mode. Written as `Drop` so that no path can free a state the child
/// still runs on.
impl Drop for Thread {
    fn drop(&mut self) {
        if !self.started || self.joined {
            return; // drops the unstarted state, or nothing is left
        }
        if self.detached {
            log::debug!("thread object collected; detached thread left running");
            return;
        }
        if let Some(record) = &self.record {
            record.wait(None);
        }
        // In the attached joinable mode the state, with unread results, drops after this.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_object_fits_in_a_48_byte_heap_chunk() {
        // Every `new` boxes one: glibc serves requests of up to 40 bytes from a
        // 48-byte chunk. An absent state must cost no tag of its own.
        let size = std::mem::size_of::<Thread>();
        assert!(size <= 40, "a Thread takes {size} bytes");
    }
}
