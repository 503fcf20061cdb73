//! A pool of parked OS threads, so that `start` rarely pays for creating one.
//!
//! Every job gets a thread of its own at once: an idle worker if there is one, else a
//! new thread. Jobs never queue behind each other, so a thread that blocks forever
//! blocks nobody else, exactly as with one OS thread per `start`. A worker that has
//! finished its job waits up to [`IDLE_TIMEOUT`] for another, then exits; at most
//! [`MAX_IDLE`] wait at once.

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

/// Work for one thread: runs once, never panics by design (see `child::spawn`).
pub type Job = Box<dyn FnOnce() + Send + 'static>;

/// How long a finished worker waits for more work before its thread exits.
const IDLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle workers kept at most; beyond that a finished worker exits at once.
const MAX_IDLE: usize = 64;

/// Stack size of worker threads: the glibc default for `pthread_create` here, so that
/// C code recursing deeply in a child behaves as under the C original. Only touched
/// pages cost memory.
const STACK_SIZE: usize = 8 << 20;

/// Where a parked worker receives its next job.
struct Mailbox {
    job: Mutex<Option<Job>>,
    arrived: Condvar,
}

/// Parked workers, the most recently parked last (its stack is the warmest).
static IDLE: Mutex<Vec<Arc<Mailbox>>> = Mutex::new(Vec::new());

/// Runs `job` on a thread of its own: a parked worker, or a new thread.
pub fn submit(job: Job) -> io::Result<()> {
    let parked = IDLE.lock().pop();
    match parked {
        Some(mailbox) => {
            *mailbox.job.lock() = Some(job);
            mailbox.arrived.notify_one();
            Ok(())
        }
        None => std::thread::Builder::new()
            .stack_size(STACK_SIZE)
            .spawn(move || work(job))
            .map(drop),
    }
}

/// A worker's life: run jobs until none comes within the idle timeout.
fn work(first: Job) {
    let mailbox = Arc::new(Mailbox {
        job: Mutex::new(None),
        arrived: Condvar::new(),
    });
    let mut job = first;
    loop {
        // A panic would mean a bug in this library; the thread must not carry on with
        // whatever it left half done, so it stops instead of going back to the pool.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            log::error!("a worker thread panicked; it exits");
            return;
        }
        match park(&mailbox) {
            Some(next) => job = next,
            None => return,
        }
    }
}

/// Parks until a job arrives; `None` when the worker should exit instead.
fn park(mailbox: &Arc<Mailbox>) -> Option<Job> {
    {
        let mut idle = IDLE.lock();
        if idle.len() >= MAX_IDLE {
            return None;
        }
        idle.push(Arc::clone(mailbox));
    }
    let mut slot = mailbox.job.lock();
    loop {
        if let Some(job) = slot.take() {
            return Some(job);
        }
        if mailbox
            .arrived
            .wait_for(&mut slot, IDLE_TIMEOUT)
            .timed_out()
            && slot.is_none()
        {
            // Leave the idle list, unless a submitter already took this mailbox out
            // of it: then its job is on the way and the worker must wait for it.
            let mut idle = IDLE.lock();
            if let Some(pos) = idle.iter().position(|m| Arc::ptr_eq(m, mailbox)) {
                idle.swap_remove(pos);
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn every_job_runs_even_when_all_workers_are_blocked() {
        // Ten jobs that each wait for the last one: only possible if none queues
        // behind another.
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let release_rx = Arc::new(std::sync::Mutex::new(release_rx));
        let (done_tx, done_rx) = mpsc::channel();
        for _ in 0..10 {
            let rx = Arc::clone(&release_rx);
            let done = done_tx.clone();
            submit(Box::new(move || {
                rx.lock().unwrap().recv().unwrap();
                done.send(()).unwrap();
            }))
            .unwrap();
        }
        for _ in 0..10 {
            release_tx.send(()).unwrap();
        }
        for _ in 0..10 {
            done_rx.recv_timeout(Duration::from_secs(10)).unwrap();
        }
    }

    #[test]
    fn finished_workers_are_reused() {
        // Sequential jobs, each submitted after the previous one's worker had time to
        // park: without reuse every job would need a new thread.
        let (tx, rx) = mpsc::channel();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..40 {
            let t = tx.clone();
            submit(Box::new(move || {
                t.send(std::thread::current().id()).unwrap()
            }))
            .unwrap();
            threads.insert(rx.recv_timeout(Duration::from_secs(10)).unwrap());
            std::thread::sleep(Duration::from_millis(5));
        }
        // Other tests may park a few workers of their own meanwhile.
        assert!(
            threads.len() <= 15,
            "40 jobs used {} threads",
            threads.len()
        );
    }
}
