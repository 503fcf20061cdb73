//! A small stock of prepared child states, so that `new` rarely pays for
//! `luaL_newstate` + `luaL_openlibs` on the caller's thread.
//!
//! A prepared state is exactly what `new` would make itself before loading the chunk:
//! a [`ChildState`] with the caller's memory limit, the standard libraries opened and
//! the library's coroutine functions installed ([`coroutine::install`]), its stack
//! empty, no hook. It is made by a parked worker of the thread pool (`pool.rs`), never
//! by the caller, and no code runs in it before `new` takes it, so a state from the
//! stock cannot be told from one made on the spot:
//! - no code of anyone's has run in it (globals, `package.loaded`, the registry are as
//!   `luaL_openlibs` left them);
//! - it has the limit asked for, exactly: only a state made for that same limit (or
//!   for none, with none) is handed out, so a state made before `set_memory_limit`
//!   changed is never used for the new limit;
//! - it has the `package.path` / `package.cpath` a state made now would get:
//!   `luaL_openlibs` takes them from the environment ([`PATH_VARS`]), and Lua code can
//!   change that while the process runs (a C module's `setenv`, LuaJIT's `ffi`), so a
//!   state is handed out only while those variables have the values they had just
//!   before its libraries were opened; the others are closed by a worker.
//!
//! The stock is process-wide and last in, first out: at most [`PER_LIMIT`] states for
//! each of the [`LIMITS`] limits `new` asked for most recently. It is filled by
//! parked workers that have had no job for a while (`pool.rs` says why not at once),
//! never by `new`. States of a limit no longer asked for are closed by a worker too.
//! Prepared states are closed ([`release`]) when the last parked worker times out,
//! and when the last state using the module closes and the pool joins its workers:
//! a process that stopped starting threads, or that exits, keeps none. While every
//! worker runs a long job, none times out, and the stock (at most
//! `PER_LIMIT × LIMITS` states) stays until one parks and idles out; closing it
//! whenever `start` takes the last parked worker would waste it in the very case it
//! is for, a thread started now and then on the one parked worker.

use std::ffi::{c_int, OsString};

use mlua::ffi;
use parking_lot::Mutex;

use crate::coroutine;
use crate::pool;
use crate::raw::{protected, RawState};
use crate::state::ChildState;

/// Prepared states kept at most per limit.
const PER_LIMIT: usize = 2;

/// Distinct limits the stock keeps states for: the most recently asked for.
const LIMITS: usize = 2;

/// A memory limit as `new` gives it to [`ChildState::new`].
type Limit = Option<usize>;

/// The environment variables `luaL_openlibs` reads, for `package.path` and
/// `package.cpath` (the version's own names first, where it has them).
#[cfg(any(feature = "lua51", feature = "luajit"))]
const PATH_VARS: [&str; 2] = ["LUA_PATH", "LUA_CPATH"];
#[cfg(feature = "lua52")]
const PATH_VARS: [&str; 4] = ["LUA_PATH_5_2", "LUA_PATH", "LUA_CPATH_5_2", "LUA_CPATH"];
#[cfg(feature = "lua53")]
const PATH_VARS: [&str; 4] = ["LUA_PATH_5_3", "LUA_PATH", "LUA_CPATH_5_3", "LUA_CPATH"];
#[cfg(feature = "lua54")]
const PATH_VARS: [&str; 4] = ["LUA_PATH_5_4", "LUA_PATH", "LUA_CPATH_5_4", "LUA_CPATH"];
#[cfg(feature = "lua55")]
const PATH_VARS: [&str; 4] = ["LUA_PATH_5_5", "LUA_PATH", "LUA_CPATH_5_5", "LUA_CPATH"];

/// The values of [`PATH_VARS`] a state's package paths came from; `None` for a state
/// whose libraries were opened while they changed, which matches no moment.
#[derive(PartialEq)]
struct PathVars(Option<[Option<OsString>; PATH_VARS.len()]>);

impl PathVars {
    fn now() -> PathVars {
        PathVars(Some(PATH_VARS.map(std::env::var_os)))
    }
}

/// The stock's bookkeeping, over any kind of state `S` (a [`ChildState`]; the tests
/// use plain numbers) and of environment `E` ([`PathVars`]).
struct Stock<S, E> {
    /// The states, the most recently made last, each with the environment it was
    /// made in.
    states: Vec<(Limit, E, S)>,
    /// The limits `new` asked for lately, the most recent first.
    wanted: [Option<Limit>; LIMITS],
    /// States being made now, per entry of `wanted` (an entry that moves takes its
    /// count along).
    making: [usize; LIMITS],
    /// The last limit for which no state could be made (too small for the
    /// libraries): not prepared again until another limit fails.
    refused: Option<Limit>,
}

static STOCK: Mutex<Stock<ChildState, PathVars>> = Mutex::new(Stock::new());

impl<S, E: PartialEq> Stock<S, E> {
    const fn new() -> Stock<S, E> {
        Stock {
            states: Vec::new(),
            wanted: [None; LIMITS],
            making: [0; LIMITS],
            refused: None,
        }
    }

    fn have(&self, limit: Limit) -> usize {
        self.states.iter().filter(|(l, _, _)| *l == limit).count()
    }

    /// Puts `limit` first among the wanted ones (unless refused); the least recently
    /// wanted one drops out when there is no room.
    fn want(&mut self, limit: Limit) {
        if self.refused == Some(limit) {
            return;
        }
        let at = self
            .wanted
            .iter()
            .position(|w| *w == Some(limit))
            .unwrap_or(LIMITS - 1);
        let making = if self.wanted[at] == Some(limit) {
            self.making[at]
        } else {
            0
        };
        self.wanted.copy_within(0..at, 1);
        self.making.copy_within(0..at, 1);
        self.wanted[0] = Some(limit);
        self.making[0] = making;
    }

    /// The most recently made state for exactly `limit` made in the environment of
    /// now, which `env` reads (only when there is a state for `limit`), if any;
    /// `limit` becomes the most wanted one either way. States made in another
    /// environment stay for [`Stock::surplus`] to take out: the caller does not pay
    /// for closing them.
    fn take(&mut self, limit: Limit, env: impl FnOnce() -> E) -> Option<S> {
        self.want(limit);
        if self.have(limit) == 0 {
            return None;
        }
        let env = env();
        self.states
            .iter()
            .rposition(|(l, e, _)| *l == limit && *e == env)
            .map(|at| self.states.remove(at).2)
    }

    /// A wanted limit short of states (counting those being made), marked as being
    /// made; the most recently wanted first.
    fn next_to_make(&mut self) -> Option<Limit> {
        for i in 0..LIMITS {
            if let Some(limit) = self.wanted[i] {
                if self.have(limit) + self.making[i] < PER_LIMIT {
                    self.making[i] += 1;
                    return Some(limit);
                }
            }
        }
        None
    }

    /// A state for `limit` was made (`Some`, with the environment it was made in)
    /// or could not be (`None`).
    fn made(&mut self, limit: Limit, state: Option<(E, S)>) {
        let at = self.wanted.iter().position(|w| *w == Some(limit));
        if let Some(i) = at {
            self.making[i] = self.making[i].saturating_sub(1);
        }
        match state {
            // Kept even when `limit` is no longer wanted: `surplus` closes it then.
            Some((env, state)) => self.states.push((limit, env, state)),
            None => {
                self.refused = Some(limit);
                if let Some(i) = at {
                    self.wanted[i] = None;
                }
            }
        }
    }

    /// Takes out the states made in another environment than `env`, those of limits
    /// no longer wanted, and any beyond [`PER_LIMIT`] (the oldest first), for the
    /// caller to close.
    fn surplus(&mut self, env: &E) -> Vec<S> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.states.len() {
            if self.states[i].1 != *env {
                out.push(self.states.remove(i).2);
            } else {
                i += 1;
            }
        }
        let mut i = 0;
        while i < self.states.len() {
            let limit = self.states[i].0;
            if !self.wanted.contains(&Some(limit)) || self.have(limit) > PER_LIMIT {
                out.push(self.states.remove(i).2);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Forgets everything, giving back the states to close.
    fn clear(&mut self) -> Vec<(Limit, E, S)> {
        self.wanted = [None; LIMITS];
        self.making = [0; LIMITS];
        self.refused = None;
        std::mem::take(&mut self.states)
    }
}

/// Makes states with `make` until every wanted limit of `stock` has its share, or
/// until `stop` says true; `env` is the environment now. States are made and closed
/// outside the lock.
fn refill_with<S, E: PartialEq>(
    stock: &Mutex<Stock<S, E>>,
    make: impl Fn(Limit) -> Option<(E, S)>,
    env: impl Fn() -> E,
    stop: &dyn Fn() -> bool,
) {
    loop {
        let now = env();
        let (surplus, next) = {
            let mut stock = stock.lock();
            let surplus = stock.surplus(&now);
            let next = if stop() { None } else { stock.next_to_make() };
            (surplus, next)
        };
        drop(surplus);
        let Some(limit) = next else {
            return;
        };
        let state = make(limit);
        stock.lock().made(limit, state);
    }
}

/// Installs the stock's work on the pool's parked workers (once per process; later
/// calls cost an atomic load).
fn register() {
    pool::set_idle_work(pool::IdleWork {
        run: refill,
        release,
    });
}

/// A prepared state for `limit`, if the stock has one made in the environment of
/// now; never makes or closes a state itself.
pub fn take(limit: Limit) -> Option<ChildState> {
    register();
    let state = STOCK.lock().take(limit, PathVars::now);
    if state.is_some() {
        log::trace!("new: a prepared state");
    }
    state
}

/// The pool's idle work: makes states until every wanted limit has its stock, or
/// until `stop` says the worker has a job. Closes the states no longer wanted.
fn refill(stop: &dyn Fn() -> bool) {
    refill_with(&STOCK, prepare, PathVars::now, stop);
}

/// Closes every prepared state: no parked worker is left to refill the stock.
fn release() {
    let states = STOCK.lock().clear();
    log::debug!(
        "no parked worker left: {} prepared state(s) closed",
        states.len()
    );
    drop(states);
}

/// Makes a state as `new` would, up to its chunk: libraries opened, coroutine
/// functions installed, empty stack; with the environment read before and after its
/// libraries were opened: when it changed meanwhile, the paths may come from either,
/// so the state is tagged as matching no environment, never handed out, and closed
/// by the next refill. `None` when memory (or the limit) ran out.
fn prepare(limit: Limit) -> Option<(PathVars, ChildState)> {
    let state = ChildState::new(limit)?;
    let before = PathVars::now();
    let mut body = |c: RawState| -> c_int {
        // SAFETY: protected on `c`, a fresh state used by this thread only, with the
        // free slots `install` needs (the body's frame has LUA_MINSTACK).
        unsafe {
            ffi::luaL_openlibs(c);
            coroutine::install(c);
        }
        0
    };
    // SAFETY: (1) `c` is fresh and owned by `state`, used by this thread only, with
    // LUA_MINSTACK free slots; (2) the body owns nothing, touches no other state and
    // does not panic.
    let status = unsafe { protected(state.raw(), 0, 0, &mut body) };
    if status != ffi::LUA_OK {
        return None; // `state` closes, with the error object on it
    }
    // SAFETY: `c` is valid and used by this thread only; emptying the stack cannot
    // raise.
    unsafe { ffi::lua_settop(state.raw(), 0) };
    let env = if PathVars::now() == before {
        before
    } else {
        PathVars(None)
    };
    Some((env, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    // States here are numbers: the unit tests run without a Lua library to call
    // (the module gets Lua's symbols from its host), so making real states is left
    // to spec/prepared_state_spec.lua. Environments are numbers too.

    const ENV: u8 = 0;

    fn filled(stock: &Mutex<Stock<u32, u8>>) {
        refill_with(stock, |_| Some((ENV, 0)), || ENV, &|| false);
    }

    fn count(stock: &Mutex<Stock<u32, u8>>, limit: Limit) -> usize {
        stock.lock().have(limit)
    }

    #[test]
    fn only_limits_new_asked_for_are_prepared() {
        let stock = Mutex::new(Stock::<u32, u8>::new());
        filled(&stock);
        assert!(stock.lock().states.is_empty());
        assert!(
            stock.lock().take(None, || ENV).is_none(),
            "out of an empty stock"
        );
        filled(&stock);
        assert_eq!(count(&stock, None), PER_LIMIT);
    }

    #[test]
    fn a_state_made_for_one_limit_is_never_given_for_another() {
        let stock = Mutex::new(Stock::<u32, u8>::new());
        let (a, b) = (Some(4 << 20), Some(8 << 20));
        let _ = stock.lock().take(a, || ENV);
        filled(&stock);
        assert_eq!(count(&stock, a), PER_LIMIT);
        assert!(
            stock.lock().take(b, || ENV).is_none(),
            "a state for another limit"
        );
        assert!(
            stock.lock().take(None, || ENV).is_none(),
            "a limited state for none"
        );
        // Three limits asked for, two kept: the oldest one's states go.
        filled(&stock);
        assert_eq!(
            (count(&stock, a), count(&stock, b), count(&stock, None)),
            (0, PER_LIMIT, PER_LIMIT)
        );
        assert!(stock.lock().take(b, || ENV).is_some());
    }

    #[test]
    fn the_most_recently_made_state_goes_first() {
        let stock = Mutex::new(Stock::<u32, u8>::new());
        let _ = stock.lock().take(None, || ENV);
        let next = std::sync::atomic::AtomicU32::new(1);
        refill_with(
            &stock,
            |_| Some((ENV, next.fetch_add(1, std::sync::atomic::Ordering::Relaxed))),
            || ENV,
            &|| false,
        );
        assert_eq!(stock.lock().take(None, || ENV), Some(2));
        assert_eq!(stock.lock().take(None, || ENV), Some(1));
        assert_eq!(stock.lock().take(None, || ENV), None);
    }

    #[test]
    fn a_limit_no_state_fits_in_is_not_tried_again() {
        let stock = Mutex::new(Stock::<u32, u8>::new());
        let tiny = Some(1000);
        let _ = stock.lock().take(tiny, || ENV);
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let make = |_| {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        };
        refill_with(&stock, make, || ENV, &|| false);
        let _ = stock.lock().take(tiny, || ENV);
        refill_with(&stock, make, || ENV, &|| false);
        assert_eq!(tries.into_inner(), 1);
    }

    #[test]
    fn refill_stops_when_the_worker_has_a_job() {
        let stock = Mutex::new(Stock::<u32, u8>::new());
        let _ = stock.lock().take(None, || ENV);
        refill_with(&stock, |_| Some((ENV, 0)), || ENV, &|| true);
        assert_eq!(count(&stock, None), 0);
    }

    #[test]
    fn states_being_made_count_against_the_share() {
        // Two workers refilling at once make no more than the share between them.
        let stock = Mutex::new(Stock::<u32, u8>::new());
        let _ = stock.lock().take(None, || ENV);
        let first = stock.lock().next_to_make();
        let second = stock.lock().next_to_make();
        assert_eq!((first, second), (Some(None), Some(None)));
        assert_eq!(stock.lock().next_to_make(), None);
        stock.lock().made(None, Some((ENV, 0)));
        stock.lock().made(None, Some((ENV, 0)));
        assert_eq!(count(&stock, None), PER_LIMIT);
    }

    #[test]
    fn clear_gives_back_every_state() {
        let stock = Mutex::new(Stock::<u32, u8>::new());
        let _ = stock.lock().take(None, || ENV);
        filled(&stock);
        assert_eq!(stock.lock().clear().len(), PER_LIMIT);
        filled(&stock);
        assert!(stock.lock().states.is_empty(), "refilled after clear");
    }

    #[test]
    fn a_state_made_in_another_environment_is_never_given_and_a_worker_closes_it() {
        let stock = Mutex::new(Stock::<u32, u8>::new());
        let _ = stock.lock().take(None, || ENV);
        filled(&stock);
        assert_eq!(count(&stock, None), PER_LIMIT);
        let changed = ENV + 1;
        assert!(
            stock.lock().take(None, || changed).is_none(),
            "a state made before the environment changed"
        );
        // The next refill closes them and makes states of the new environment.
        refill_with(&stock, |_| Some((changed, 1)), || changed, &|| false);
        assert!(
            stock
                .lock()
                .states
                .iter()
                .all(|(_, env, _)| *env == changed),
            "a state of the old environment was kept"
        );
        assert_eq!(count(&stock, None), PER_LIMIT);
        assert_eq!(stock.lock().take(None, || changed), Some(1));
        assert_eq!(stock.lock().take(None, || changed), Some(1));
    }
}
