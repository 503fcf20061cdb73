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

enum Mail {
    Empty,
    Job(Job),
    /// A reserved worker that will get no job after all.
    Quit,
}

/// Where a worker receives its next job.
struct Mailbox {
    mail: Mutex<Mail>,
    arrived: Condvar,
}

impl Mailbox {
    fn post(&self, mail: Mail) {
        *self.mail.lock() = mail;
        self.arrived.notify_one();
    }
}

/// Parked workers, the most recently parked last (its stack is the warmest).
static IDLE: Mutex<Vec<Arc<Mailbox>>> = Mutex::new(Vec::new());

/// A worker set aside for one job: getting one is the only step that can fail (the OS
/// may refuse a new thread), so callers reserve before giving up anything they own.
pub struct Reserved(Option<Arc<Mailbox>>);

/// Reserves a parked worker, or starts a new thread waiting for its first job.
pub fn reserve() -> io::Result<Reserved> {
    if let Some(mailbox) = IDLE.lock().pop() {
        return Ok(Reserved(Some(mailbox)));
    }
    let mailbox = Arc::new(Mailbox {
        mail: Mutex::new(Mail::Empty),
        arrived: Condvar::new(),
    });
    let theirs = Arc::clone(&mailbox);
    std::thread::Builder::new()
        .stack_size(STACK_SIZE)
        .spawn(move || work(theirs))?;
    Ok(Reserved(Some(mailbox)))
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
            mailbox.post(Mail::Quit);
        }
    }
}

/// A worker's life: run jobs until none comes within the idle timeout.
fn work(mailbox: Arc<Mailbox>) {
    // Reserved before it started: its first job (or `Quit`) is on the way.
    let mut next = match receive(&mailbox, None) {
        Got::Job(job) => Some(job),
        Got::Quit | Got::Timeout => None,
    };
    while let Some(job) = next {
        // A panic would mean a bug in this library; the thread must not carry on with
        // whatever it left half done, so it stops instead of going back to the pool.
        if catch_unwind(AssertUnwindSafe(job)).is_err() {
            log::error!("a worker thread panicked; it exits");
            return;
        }
        next = park(&mailbox);
    }
}

enum Got {
    Job(Job),
    Quit,
    Timeout,
}

/// Waits for mail, at most `timeout` (`None`: no limit).
fn receive(mailbox: &Mailbox, timeout: Option<Duration>) -> Got {
    let mut mail = mailbox.mail.lock();
    loop {
        match std::mem::replace(&mut *mail, Mail::Empty) {
            Mail::Job(job) => return Got::Job(job),
            Mail::Quit => return Got::Quit,
            Mail::Empty => {}
        }
        match timeout {
            Some(t) => {
                if mailbox.arrived.wait_for(&mut mail, t).timed_out()
                    && matches!(*mail, Mail::Empty)
                {
                    return Got::Timeout;
                }
            }
            None => mailbox.arrived.wait(&mut mail),
        }
    }
}

/// Parks in the idle list until a job arrives; `None` when the worker should exit.
fn park(mailbox: &Arc<Mailbox>) -> Option<Job> {
    loop {
        {
            let mut idle = IDLE.lock();
            if idle.len() >= MAX_IDLE {
                return None;
            }
            idle.push(Arc::clone(mailbox));
        }
        let got = match receive(mailbox, Some(IDLE_TIMEOUT)) {
            Got::Timeout => {
                // Leave the idle list, unless a `reserve` has already taken this
                // mailbox out of it: then mail is on the way, so wait for it.
                let mut idle = IDLE.lock();
                if let Some(pos) = idle.iter().position(|m| Arc::ptr_eq(m, mailbox)) {
                    idle.swap_remove(pos);
                    return None;
                }
                drop(idle);
                receive(mailbox, None)
            }
            got => got,
        };
        match got {
            Got::Job(job) => return Some(job),
            // Reserved, then released unused: park again.
            Got::Quit | Got::Timeout => continue,
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
            reserve().unwrap().run(Box::new(move || {
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
    fn a_reservation_dropped_unused_lets_its_thread_go() {
        // The worker must not wait forever for a job that never comes; it parks (or
        // exits) and can be reserved again.
        drop(reserve().unwrap());
        let (tx, rx) = mpsc::channel();
        reserve()
            .unwrap()
            .run(Box::new(move || tx.send(()).unwrap()));
        rx.recv_timeout(Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn finished_workers_are_reused() {
        // Sequential jobs, each submitted after the previous one's worker had time to
        // park: without reuse every job would need a new thread.
        let (tx, rx) = mpsc::channel();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..40 {
            let t = tx.clone();
            reserve().unwrap().run(Box::new(move || {
                t.send(std::thread::current().id()).unwrap()
            }));
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
