//! A pool of warm Lua states: `size` OS threads, each owning one Lua state made once
//! (libraries opened, the creator's paths, `init` run), that run short tasks in
//! submission order.
//!
//! A task is a function (or source) and its arguments, held as channel messages
//! ([`Msg`]) until a worker takes it: the submitter's state is free to go on, or to
//! close. Each task has a [`Record`] of its own, exactly as a thread has: `join`,
//! `alive`, `select` and `interrupt()` work on a task as on a thread, and an interrupt
//! reaches only the task it was made for (the worker enters and leaves the record
//! around that task's call only). The results are copied out of the worker's state into
//! messages before the next task runs, so the state's stack is empty between tasks;
//! its hooks are reset after each task, and a task's error never ends its worker.
//!
//! The queue is bounded when the pool was given a `queue` size: `submit` then waits
//! for room through [`wait`](crate::wait), so `interrupt()` reaches a waiting submitter
//! as any other wait. A worker whose state ran `max_tasks` tasks, or holds more than
//! `max_memory` bytes after a task, gets a fresh state (init run again) before the
//! next one.
//!
//! Every Lua object of a pool holds a [`Handle`], and a copy of a pool value into
//! another state (a task's upvalue, a thread's argument, a message) is a new handle.
//! The workers run while a handle outside the pool's own worker states is alive:
//! those handles hold the [`Pool`], whose drop closes the queue. A handle in one of
//! the pool's worker states holds only the shared part, so a warm state's global
//! cannot keep its own pool running.

use std::collections::VecDeque;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use mlua::ffi;
use parking_lot::{Condvar, Mutex};

use crate::channel::{Msg, Wait};
use crate::copy::{
    c_function_names, deliver, deliver_task, encode, prepare_source, reserve, CopyError, Rules,
    SOURCE_SLOTS,
};
use crate::coroutine;
use crate::errors::{describe_error, traceback};
use crate::interrupt::{self, Request};
use crate::message::View;
use crate::names::Module;
use crate::raw::{protected, push_bytes, push_package, string_at, RawState};
use crate::record::{Ended, Record};
use crate::state::ChildState;
use crate::wait::{self, WaitList};

/// How long an idle worker watches for the next task before sleeping (a joiner
/// watches as long for a task's end: see `Record::wait_end`). A sleep and a wake-up
/// cost more than a short task (a pool's reason to be); each side spins only when it
/// is its turn (one spinner per CPU).
const TASK_SPIN: std::time::Duration = std::time::Duration::from_micros(50);
/// What spinning has lately been worth at each of those two places (see
/// [`wait::Gauge`]): nothing, when the machine has no CPU to spare.
static TASK_JOIN_SPIN: wait::Gauge = wait::Gauge::new();
static IDLE_WORKER_SPIN: wait::Gauge = wait::Gauge::new();

/// The stack slot of a worker state's message handler; a task's function and
/// arguments go above it.
const HANDLER: c_int = 1;

/// What a pool is made with (checked by the Lua-facing side).
pub struct Config {
    pub size: usize,
    /// `init`: a function or source, as a message.
    pub init: Option<Msg>,
    /// Bounded queue: at most this many tasks wait.
    pub queue: Option<usize>,
    pub max_tasks: Option<u64>,
    pub max_memory: Option<usize>,
    /// The creator's `package.path` and `package.cpath`, for every worker state.
    pub paths: Option<Paths>,
    /// The memory limit of worker states (the creator's own).
    pub limit: Option<usize>,
    pub module: Module,
}

/// `package.path` and `package.cpath` (each absent where the creator had none).
pub struct Paths {
    pub path: Option<Vec<u8>>,
    pub cpath: Option<Vec<u8>>,
}

/// A task's function or source, and its arguments.
struct Work {
    function: Msg,
    args: Vec<Msg>,
}

/// What became of a task.
enum Outcome {
    Waiting(Work),
    Running,
    /// The function returned these values.
    Returned(Vec<Msg>),
    /// It raised: the error's text.
    Failed(Vec<u8>),
    /// The pool was closed with `cancel` before it ran.
    Cancelled,
    /// `join` took the outcome.
    Joined,
}

/// One submitted task, shared by its Lua object and the pool.
pub struct Task {
    record: Arc<Record>,
    outcome: Mutex<Outcome>,
}

/// What `join` gets.
pub enum Joined {
    Timeout,
    /// The joining code was interrupted: raise this module's `interrupted_error`.
    Interrupted(Module),
    Returned(Vec<Msg>),
    Failed(Vec<u8>),
    Cancelled,
    /// The task was joined before.
    Again,
}

impl Task {
    /// The record to wait on for this task's end (`select`).
    pub fn record(&self) -> &Arc<Record> {
        &self.record
    }

    /// Whether `join` took the outcome already (`select` refuses such a task).
    pub fn joined(&self) -> bool {
        matches!(*self.outcome.lock(), Outcome::Joined)
    }

    pub fn alive(&self) -> bool {
        !self.record.is_finished()
    }

    /// Asks the task to raise `interrupted_error` (once, or on every event) or stops
    /// asking; before the task runs, the request waits for it.
    pub fn interrupt(&self, request: Request) {
        self.record.interrupt(request);
    }

    /// Waits for the end as `wait` says, then takes the outcome.
    pub fn join(&self, wait: Wait) -> Joined {
        if matches!(*self.outcome.lock(), Outcome::Joined) {
            return Joined::Again;
        }
        let finished = match wait {
            Wait::Now => self.record.is_finished(),
            // A short task often ends within the watch `wait_end` keeps before it
            // sleeps: no sleep and no wake-up, each of which costs more than the task.
            Wait::Until(deadline) => {
                let mut module = None;
                let mut interrupted = || {
                    module = interrupt::claim_here();
                    module.is_some()
                };
                match self
                    .record
                    .wait_end(&TASK_JOIN_SPIN, deadline, &mut interrupted)
                {
                    Ended::Finished => true,
                    Ended::TimedOut => false,
                    Ended::Interrupted => {
                        return Joined::Interrupted(module.unwrap_or_default());
                    }
                }
            }
        };
        if !finished {
            return Joined::Timeout;
        }
        // The last moment the results are still the task's (as for a thread's join).
        if let Some(module) = interrupt::claim_here() {
            return Joined::Interrupted(module);
        }
        let mut outcome = self.outcome.lock();
        match std::mem::replace(&mut *outcome, Outcome::Joined) {
            Outcome::Returned(values) => Joined::Returned(values),
            Outcome::Failed(text) => Joined::Failed(text),
            Outcome::Cancelled => Joined::Cancelled,
            Outcome::Joined => Joined::Again,
            other => {
                // A finished record always has its outcome stored first.
                *outcome = other;
                Joined::Timeout
            }
        }
    }

    /// Gives back the values `join` took when they could not be delivered (the
    /// joining state ran out of memory), so that a later `join` gets them, as a
    /// channel keeps a message its receiver could not hold.
    pub fn restore(&self, values: Vec<Msg>) {
        let mut outcome = self.outcome.lock();
        if matches!(*outcome, Outcome::Joined) {
            *outcome = Outcome::Returned(values);
        }
    }
}

struct Queue {
    tasks: VecDeque<Arc<Task>>,
    /// No more tasks are taken; the workers end once the queue is empty.
    closed: bool,
    /// Submitters waiting for room in a bounded queue.
    submitters: WaitList,
}

struct Shared {
    queue: Mutex<Queue>,
    /// Tasks in the queue, readable without its lock: an idle worker watches it for a
    /// moment before it sleeps.
    queued: AtomicUsize,
    /// Workers wait here for a task.
    task_ready: Condvar,
    /// Workers whose life is over (their state closed), and the threads waiting in
    /// `close` for that, through the library's waits so that `interrupt()` reaches them.
    ended: Mutex<(usize, WaitList)>,
    config: Config,
}

/// Why a pool could not be made.
pub enum Failed {
    /// A worker could not start, or its `init` failed: the text to raise.
    Text(Vec<u8>),
    /// The creating chunk was interrupted while the workers ran `init`.
    Interrupted(Module),
}

/// How `close` ended its wait for the workers.
pub enum Closed {
    /// Every worker has ended.
    Done,
    /// The deadline passed first.
    Timeout,
    /// The chunk waiting was interrupted (the pool stays closed; a later `close`
    /// waits again).
    Interrupted(Module),
}

/// Why `submit` did not queue a task.
pub enum Refused {
    Closed,
    Full,
    Timeout,
    Interrupted(Module),
}

/// The running pool: its workers, kept running while a [`Handle`] outside the pool's
/// own worker states keeps this alive.
struct Pool {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    fn join_workers(&self) {
        let workers = std::mem::take(&mut *self.workers.lock());
        for worker in workers {
            let _ = worker.join();
        }
    }

    /// `close` for a pool that never ran a task (its creation failed half-way), which
    /// no interrupt may cut short: the workers only made their states and end at once.
    fn close_now(&self) {
        refuse_tasks(&self.shared, false);
        self.join_workers();
    }
}

impl Drop for Pool {
    /// The last handle that kept the pool went without `close` (collected): no new
    /// tasks, the queued ones still run, and the workers end by themselves; nobody
    /// waits for them.
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.task_ready.notify_all();
        self.workers.get_mut().clear();
    }
}

/// What one Lua object of a pool holds. Every copy of a pool value (an argument, an
/// upvalue, a message, a result) is a handle of its own. A handle in one of the pool's
/// own worker states (a task's upvalue, say) does not keep the pool running: a warm
/// state keeps its globals, and a pool whose workers held it would never end. Any
/// other handle does, as a channel lives while a state holds it.
pub struct Handle {
    shared: Arc<Shared>,
    keeper: Option<Arc<Pool>>,
    pool: Weak<Pool>,
    in_worker: bool,
}

/// `close` was called where it would wait for itself.
pub struct OwnWorker;

impl Handle {
    /// Starts the workers and waits until each has made its state and run `init`;
    /// when one fails, the pool is closed again and the first error's text returned.
    /// An interrupt of the chunk waiting ends the wait: the workers are left to finish
    /// `init` and end by themselves.
    pub fn new_pool(config: Config) -> Result<Handle, Failed> {
        let size = config.size;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                tasks: VecDeque::new(),
                closed: false,
                submitters: WaitList::new(),
            }),
            queued: AtomicUsize::new(0),
            task_ready: Condvar::new(),
            ended: Mutex::new((0, WaitList::new())),
            config,
        });
        let startup = Arc::new(Startup::default());
        let pool = Arc::new(Pool {
            shared,
            workers: Mutex::new(Vec::with_capacity(size)),
        });
        for _ in 0..size {
            let shared = Arc::clone(&pool.shared);
            let ready = Arc::clone(&startup);
            let spawned = std::thread::Builder::new()
                .name("llthreads-pool".into())
                .stack_size(8 << 20)
                .spawn(move || work(shared, ready));
            match spawned {
                Ok(handle) => pool.workers.lock().push(handle),
                Err(e) => {
                    pool.close_now();
                    let text = format!("could not create a pool thread: {e}");
                    return Err(Failed::Text(text.into_bytes()));
                }
            }
        }
        match startup.wait(size) {
            Ok(None) => Ok(Handle {
                shared: Arc::clone(&pool.shared),
                pool: Arc::downgrade(&pool),
                keeper: Some(pool),
                in_worker: false,
            }),
            Ok(Some(text)) => {
                pool.close_now();
                Err(Failed::Text(text))
            }
            // Dropped: closed, and nobody waits for the workers.
            Err(module) => Err(Failed::Interrupted(module)),
        }
    }

    /// A handle of the same pool for another state: `in_worker` when that state is
    /// one of the pool's workers ([`Handle::is_worker_state`]).
    pub fn copy_for(&self, in_worker: bool) -> Handle {
        let keeper = if in_worker {
            None
        } else {
            self.keeper.clone().or_else(|| self.pool.upgrade())
        };
        Handle {
            shared: Arc::clone(&self.shared),
            keeper,
            pool: Weak::clone(&self.pool),
            in_worker,
        }
    }

    /// A handle for a message. A queued message is outside every worker state, so
    /// it keeps the pool running, as it keeps a channel alive, even when it was sent
    /// from one of the pool's own workers (if the pool still runs).
    pub fn for_message(&self) -> Handle {
        Handle {
            shared: Arc::clone(&self.shared),
            keeper: self.keeper.clone().or_else(|| self.pool.upgrade()),
            pool: Weak::clone(&self.pool),
            in_worker: false,
        }
    }

    /// Ends a pool whose creation failed after this handle was made (its Lua object
    /// could not be): no interrupt may cut this wait short, and the workers only made
    /// their states.
    pub fn close_now(&self) {
        if let Some(pool) = &self.keeper {
            pool.close_now();
        }
    }

    /// Whether `l` is a state of one of this pool's workers.
    ///
    /// # Safety
    /// `l` is valid with one free slot. Never raises.
    pub unsafe fn is_worker_state(&self, l: RawState) -> bool {
        // SAFETY: see the function's contract; a raw get with a light userdata key.
        unsafe {
            let found = crate::raw::registry_get(l, &WORKER_KEY) == ffi::LUA_TLIGHTUSERDATA
                && ffi::lua_touserdata(l, -1).cast_const() == self.id();
            ffi::lua_settop(l, -2);
            found
        }
    }

    /// The pool's identity: the same for every handle of it.
    pub fn id(&self) -> *const c_void {
        Arc::as_ptr(&self.shared).cast()
    }

    pub fn size(&self) -> usize {
        self.shared.config.size
    }

    /// Queues `fn(args...)`; waits as `wait` says while a bounded queue is full.
    pub fn submit(&self, function: Msg, args: Vec<Msg>, wait: Wait) -> Result<Arc<Task>, Refused> {
        let shared = &self.shared;
        let task = Arc::new(Task {
            record: Arc::new(Record::new(shared.config.module, Request::None)),
            outcome: Mutex::new(Outcome::Waiting(Work { function, args })),
        });
        let capacity = shared.config.queue;
        let mut queue = shared.queue.lock();
        let has_room = |q: &Queue| capacity.is_none_or(|c| q.tasks.len() < c);
        if !queue.closed && !has_room(&queue) {
            let Wait::Until(deadline) = wait else {
                return Err(Refused::Full);
            };
            drop(queue);
            let w = wait::current();
            loop {
                queue = shared.queue.lock();
                if queue.closed || has_room(&queue) {
                    queue.submitters.remove(&w);
                    break;
                }
                queue.submitters.register(&w);
                drop(queue);
                if let Some(module) = interrupt::claim_here() {
                    give_up_room(shared, &w);
                    return Err(Refused::Interrupted(module));
                }
                if wait::expired(deadline) {
                    give_up_room(shared, &w);
                    return Err(Refused::Timeout);
                }
                w.park(deadline);
            }
        }
        if queue.closed {
            return Err(Refused::Closed);
        }
        queue.tasks.push_back(Arc::clone(&task));
        shared.queued.fetch_add(1, Ordering::SeqCst);
        drop(queue);
        shared.task_ready.notify_one();
        Ok(task)
    }

    /// Refuses new tasks; with `cancel`, the queued ones never run (their `join` says
    /// so). Waits for the workers to end, until `deadline` (`None`: no limit) or an
    /// interrupt of the chunk waiting; workers that have not ended are left to end by
    /// themselves, and a later `close` waits for them again. Refused in one of the
    /// pool's own worker states, where it would wait for itself.
    pub fn close(&self, cancel: bool, deadline: Option<Instant>) -> Result<Closed, OwnWorker> {
        if self.in_worker {
            return Err(OwnWorker);
        }
        let shared = &self.shared;
        refuse_tasks(shared, cancel);
        let w = wait::current();
        loop {
            let mut ended = shared.ended.lock();
            if ended.0 >= shared.config.size {
                ended.1.remove(&w);
                break;
            }
            ended.1.register(&w);
            drop(ended);
            let gave_up = if let Some(module) = interrupt::claim_here() {
                Some(Closed::Interrupted(module))
            } else if wait::expired(deadline) {
                Some(Closed::Timeout)
            } else {
                None
            };
            if let Some(why) = gave_up {
                shared.ended.lock().1.remove(&w);
                return Ok(why);
            }
            w.park(deadline);
        }
        if let Some(pool) = self.keeper.clone().or_else(|| self.pool.upgrade()) {
            pool.join_workers();
        }
        Ok(Closed::Done)
    }
}

/// A submitter waiting for room gives up. When a worker had already taken it off the
/// list to wake it (room came), that wake-up goes to the next one waiting.
fn give_up_room(shared: &Shared, w: &Arc<wait::Waiter>) {
    let mut queue = shared.queue.lock();
    if queue.submitters.remove(w) {
        return;
    }
    let capacity = shared.config.queue;
    let room = capacity.is_none_or(|c| queue.tasks.len() < c);
    let next = if room { queue.submitters.pop() } else { None };
    drop(queue);
    if let Some(next) = next {
        next.wake();
    }
}

fn refuse_tasks(shared: &Shared, cancel: bool) {
    let (cancelled, submitters) = {
        let mut queue = shared.queue.lock();
        queue.closed = true;
        let cancelled = if cancel {
            shared.queued.store(0, Ordering::SeqCst);
            std::mem::take(&mut queue.tasks)
        } else {
            VecDeque::new()
        };
        (cancelled, queue.submitters.take_all())
    };
    shared.task_ready.notify_all();
    wait::wake_all(submitters);
    for task in cancelled {
        *task.outcome.lock() = Outcome::Cancelled;
        task.record.finish(ffi::LUA_ERRRUN);
    }
}

/// The next task, or `None` once the pool is closed and its queue empty.
fn next_task(shared: &Shared) -> Option<Arc<Task>> {
    let mut queue = shared.queue.lock();
    let mut spun = false;
    loop {
        if let Some(task) = queue.tasks.pop_front() {
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            // There is room now: one waiting submitter may go on (woken once the
            // lock is released, so that it does not wake only to wait for it).
            let submitter = queue.submitters.pop();
            drop(queue);
            if let Some(w) = submitter {
                w.wake();
            }
            return Some(task);
        }
        if queue.closed {
            return None;
        }
        if !spun {
            // A submitter that joins each task submits the next one soon after:
            // watching for it a moment costs less than a sleep and a wake-up.
            spun = true;
            drop(queue);
            IDLE_WORKER_SPIN.spin(TASK_SPIN, None, || shared.queued.load(Ordering::SeqCst) > 0);
            queue = shared.queue.lock();
            continue;
        }
        shared.task_ready.wait(&mut queue);
    }
}

/// How the workers of a new pool tell its creator that their states are ready. (Not
/// `std::sync::mpsc`: its receiver makes the waiting thread's `thread::current()`
/// handle, never freed on the host's main thread, which a user's valgrind run reports.)
#[derive(Default)]
struct Startup {
    /// Workers that reported, the first failure's text, and the creator if it waits.
    reports: Mutex<(usize, Option<Vec<u8>>, WaitList)>,
}

impl Startup {
    fn report(&self, result: Result<(), Vec<u8>>) {
        let mut reports = self.reports.lock();
        reports.0 += 1;
        if let Err(text) = result {
            reports.1.get_or_insert(text);
        }
        let creator = reports.2.take_all();
        drop(reports);
        wait::wake_all(creator);
    }

    /// Waits for `n` reports: the first failure's text, if any; or the module whose
    /// interrupt ended the wait.
    fn wait(&self, n: usize) -> Result<Option<Vec<u8>>, Module> {
        let w = wait::current();
        loop {
            let mut reports = self.reports.lock();
            if reports.0 >= n {
                reports.2.remove(&w);
                return Ok(reports.1.take());
            }
            reports.2.register(&w);
            drop(reports);
            if let Some(module) = interrupt::claim_here() {
                self.reports.lock().2.remove(&w);
                return Err(module);
            }
            w.park(None);
        }
    }
}

/// Counts a worker as ended when its life is over, whichever way it ends, and wakes
/// whoever waits in `close`.
struct Ending(Arc<Shared>);

impl Drop for Ending {
    fn drop(&mut self) {
        let mut ended = self.0.ended.lock();
        ended.0 += 1;
        let waiting = ended.1.take_all();
        drop(ended);
        wait::wake_all(waiting);
    }
}

/// A worker's life: make a state, say so, run tasks until the pool closes.
fn work(shared: Arc<Shared>, ready: Arc<Startup>) {
    // Declared first, dropped last: after the state below is closed.
    let _ending = Ending(Arc::clone(&shared));
    let mut state = match WorkerState::new(&shared) {
        Ok(state) => state,
        Err(text) => {
            ready.report(Err(text));
            return;
        }
    };
    ready.report(Ok(()));
    drop(ready);
    while let Some(task) = next_task(&shared) {
        state.run(&task);
        if state.worn(&shared.config) {
            // The fresh state first: when `init` fails now, the old state goes on.
            match WorkerState::new(&shared) {
                Ok(fresh) => state = fresh,
                Err(text) => log::warn!(
                    "pool worker kept its state: a fresh one failed: {}",
                    String::from_utf8_lossy(&text)
                ),
            }
        }
    }
}

/// A worker's Lua state and how much it has run.
struct WorkerState {
    state: ChildState,
    tasks: u64,
}

/// Registry key of a worker state's cache of loaded task functions.
static FUNCTIONS_KEY: u8 = 0;

/// Registry key of a worker state's pool: the identity of the pool ([`Handle::id`])
/// whose worker it is, as a light userdata.
static WORKER_KEY: u8 = 0;

impl WorkerState {
    /// Makes the state: libraries, the creator's paths, the message handler, `init`.
    fn new(shared: &Arc<Shared>) -> Result<WorkerState, Vec<u8>> {
        let config = &shared.config;
        let id = Arc::as_ptr(shared) as *mut c_void;
        let state = ChildState::new(config.limit).ok_or_else(|| b"not enough memory".to_vec())?;
        let l = state.raw();
        let mut body = |l: RawState| -> c_int {
            // SAFETY: protected on `l`, a fresh state this thread owns.
            unsafe {
                ffi::luaL_openlibs(l);
                coroutine::install(l);
                if let Some(paths) = &config.paths {
                    set_package_field(l, c"path", paths.path.as_deref());
                    set_package_field(l, c"cpath", paths.cpath.as_deref());
                }
                ffi::lua_newtable(l);
                crate::raw::registry_set(l, &FUNCTIONS_KEY);
                ffi::lua_pushlightuserdata(l, id);
                crate::raw::registry_set(l, &WORKER_KEY);
                ffi::lua_pushcfunction(l, traceback);
            }
            1
        };
        // SAFETY: a fresh state has LUA_MINSTACK free slots; the body owns nothing.
        if unsafe { protected(l, 0, 1, &mut body) } != ffi::LUA_OK {
            // SAFETY: the error object is on top.
            return Err(unsafe { error_text(l) });
        }
        let mut worker = WorkerState { state, tasks: 0 };
        if let Some(init) = &config.init {
            // SAFETY: the stack is `[handler]`; this thread owns the state.
            let failed = unsafe { worker.call(init, &[], None) };
            if let Some(text) = failed {
                return Err(text);
            }
            // SAFETY: as above; `init`'s results are dropped.
            unsafe { ffi::lua_settop(l, HANDLER) };
        }
        Ok(worker)
    }

    /// Pushes `function` (source is compiled) and `args`, and calls it under the
    /// message handler, entering `record` around the call when there is one. Leaves
    /// the results above the handler; returns the error's text when it failed.
    ///
    /// # Safety
    /// This thread owns the state; its stack is `[handler]`.
    unsafe fn call(
        &mut self,
        function: &Msg,
        args: &[Msg],
        record: Option<&Record>,
    ) -> Option<Vec<u8>> {
        let l = self.state.raw();
        // SAFETY: see the function's contract; every push below has room (`reserve`)
        // or runs protected.
        unsafe {
            if reserve(l, args.len() as c_int + 2 * SOURCE_SLOTS + 4).is_err() {
                return Some(b"stack overflow (too many arguments)".to_vec());
            }
            let loaded = match function.view() {
                View::Str(source) => load_source(l, source),
                _ => deliver_task(function, l, &FUNCTIONS_KEY),
            };
            if loaded.is_err() {
                return Some(error_text(l));
            }
            for arg in args {
                if deliver(arg, l).is_err() {
                    return Some(error_text(l));
                }
            }
            if let Some(record) = record {
                record.enter(l);
            }
            let status = ffi::lua_pcall(l, args.len() as c_int, ffi::LUA_MULTRET, HANDLER);
            if let Some(record) = record {
                record.code_ended(l);
            }
            // A task's own hook goes with it: the next task starts with none.
            ffi::lua_sethook(l, None, 0, 0);
            if status != ffi::LUA_OK {
                describe_error(l);
                return Some(error_text(l));
            }
        }
        None
    }

    /// Runs `task`, stores its outcome and ends its record.
    fn run(&mut self, task: &Task) {
        let work = {
            let mut outcome = task.outcome.lock();
            match std::mem::replace(&mut *outcome, Outcome::Running) {
                Outcome::Waiting(work) => work,
                other => {
                    *outcome = other;
                    return;
                }
            }
        };
        let l = self.state.raw();
        // SAFETY: this thread owns the state; its stack is `[handler]` between tasks.
        let (outcome, status) = unsafe {
            match self.call(&work.function, &work.args, Some(&task.record)) {
                Some(text) => (Outcome::Failed(text), ffi::LUA_ERRRUN),
                None => match results(l) {
                    Ok(values) => (Outcome::Returned(values), ffi::LUA_OK),
                    Err(text) => (Outcome::Failed(text), ffi::LUA_ERRRUN),
                },
            }
        };
        drop(work);
        // SAFETY: as above.
        unsafe {
            // Lua code ran after the task's own hook was removed (an error value's
            // `__tostring`, finalizers): a hook it set must not reach the next task.
            ffi::lua_sethook(l, None, 0, 0);
            ffi::lua_settop(l, HANDLER);
        }
        self.tasks += 1;
        *task.outcome.lock() = outcome;
        task.record.finish(status);
    }

    /// Whether the state should be replaced before the next task.
    fn worn(&self, config: &Config) -> bool {
        if config.max_tasks.is_some_and(|max| self.tasks >= max) {
            return true;
        }
        let Some(max) = config.max_memory else {
            return false;
        };
        let l = self.state.raw();
        // SAFETY: this thread owns the state; LUA_GCCOUNT(B) only reads counters.
        let bytes = self.state.held().unwrap_or_else(|| unsafe {
            ffi::lua_gc(l, ffi::LUA_GCCOUNT, 0) as usize * 1024
                + ffi::lua_gc(l, ffi::LUA_GCCOUNTB, 0) as usize
        });
        bytes > max
    }
}

/// Copies the results above the handler into messages (values that cannot cross are
/// described, as `join` does for a thread).
///
/// # Safety
/// This thread owns `l`, whose stack is `[handler, results...]`.
unsafe fn results(l: RawState) -> Result<Vec<Msg>, Vec<u8>> {
    // SAFETY: see the function's contract.
    unsafe {
        let top = ffi::lua_gettop(l);
        if reserve(l, SOURCE_SLOTS + 2).is_err() {
            return Err(b"stack overflow (no room for results)".to_vec());
        }
        let mut names_fresh = false;
        'again: loop {
            let levels = prepare_source(l, HANDLER + 1, top);
            let mut values = Vec::with_capacity((top - HANDLER) as usize);
            for idx in HANDLER + 1..=top {
                match encode(
                    l,
                    idx,
                    &mut |_| Vec::new(),
                    levels,
                    names_fresh,
                    Rules::VALUE_RESULTS,
                ) {
                    Ok(msg) => values.push(msg),
                    Err(CopyError::NeedNames) if !names_fresh => {
                        c_function_names(l);
                        names_fresh = true;
                        continue 'again;
                    }
                    Err(CopyError::TooDeep) => {
                        return Err(b"Hit maximum copy depth (31 > 30).".to_vec())
                    }
                    Err(_) => return Err(b"a result could not be copied".to_vec()),
                }
            }
            return Ok(values);
        }
    }
}

/// Compiles `source` onto `l`'s top (its own chunk name, as `new` does).
///
/// # Safety
/// This thread owns `l`, with a free slot; on failure the error object is on top.
unsafe fn load_source(l: RawState, source: &[u8]) -> Result<(), ()> {
    // `luaL_loadbuffer` wants a NUL-terminated name: the source itself, as `new`
    // names a chunk; the copy is made in the state, so nothing is owned here.
    let mut body = |l: RawState| -> c_int {
        // SAFETY: protected on `l`; the pushed copy of the source is NUL-terminated
        // and stays on the stack while it is compiled.
        unsafe {
            push_bytes(l, source);
            let name = ffi::lua_tolstring(l, -1, std::ptr::null_mut());
            if ffi::luaL_loadbuffer(l, source.as_ptr().cast(), source.len(), name) != ffi::LUA_OK {
                ffi::lua_error(l);
            }
            ffi::lua_remove(l, -2);
        }
        1
    };
    // SAFETY: see the function's contract; the body owns nothing.
    match unsafe { protected(l, 0, 1, &mut body) } {
        ffi::LUA_OK => Ok(()),
        _ => Err(()),
    }
}

/// Sets `package[field]` of a fresh state to `value` (nothing when `None`).
///
/// # Safety
/// Protected on `l`.
unsafe fn set_package_field(l: RawState, field: &std::ffi::CStr, value: Option<&[u8]>) {
    let Some(value) = value else { return };
    // SAFETY: see the function's contract; a raw set on the table just pushed.
    unsafe {
        push_package(l);
        ffi::lua_pushstring(l, field.as_ptr());
        push_bytes(l, value);
        ffi::lua_rawset(l, -3);
        ffi::lua_settop(l, -2);
    }
}

/// The text of the error object on top of `l` (popped), for a task's `join` or the
/// pool's creation.
///
/// # Safety
/// This thread owns `l`, with the error object on top.
unsafe fn error_text(l: RawState) -> Vec<u8> {
    // SAFETY: see the function's contract; reading a string does not allocate.
    unsafe {
        let text = string_at(l, -1).map_or_else(|| b"(null)".to_vec(), <[u8]>::to_vec);
        ffi::lua_settop(l, -2);
        text
    }
}
