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
//! - `package.path` / `package.cpath` come from the environment (`LUA_PATH`, ...) when
//!   `luaL_openlibs` runs, as for a state made on the spot: Lua code cannot change the
//!   process environment (the standard library has `os.getenv`, no `setenv`), so the
//!   value is the same whenever it is read. (A C module calling `setenv` while the
//!   process runs would be seen by states prepared after the change only.)
//!
//! The stock is process-wide and last in, first out: at most [`PER_LIMIT`] states for
//! each of the [`LIMITS`] limits `new` asked for most recently. It is filled by
//! parked workers that have had no job for a while (`pool.rs` says why not at once),
//! never by `new`. States of a limit no longer asked for are closed by a worker too.
//! Prepared states live as long as parked workers do: when the last one exits (it
//! timed out, or the last state using the module closed and joined it), the pool
//! calls [`release`] and every prepared state is closed, so a process that stopped
//! starting threads, or that exits, keeps none.

use std::ffi::c_int;

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

/// The stock's bookkeeping, over any kind of state `S` (a [`ChildState`]; the tests
/// use plain numbers).
struct Stock<S> {
    /// The states, the most recently made last.
    states: Vec<(Limit, S)>,
    /// The limits `new` asked for lately, the most recent first.
    wanted: [Option<Limit>; LIMITS],
    /// States being made now, per entry of `wanted` (an entry that moves takes its
    /// count along).
    making: [usize; LIMITS],
    /// The last limit for which no state could be made (too small for the
    /// libraries): not prepared again until another limit fails.
    refused: Option<Limit>,
}

static STOCK: Mutex<Stock<ChildState>> = Mutex::new(Stock::new());

impl<S> Stock<S> {
    const fn new() -> Stock<S> {
        Stock {
            states: Vec::new(),
            wanted: [None; LIMITS],
            making: [0; LIMITS],
            refused: None,
        }
    }

    fn have(&self, limit: Limit) -> usize {
        self.states.iter().filter(|(l, _)| *l == limit).count()
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

    /// The most recently made state for exactly `limit`, if any; `limit` becomes
    /// the most wanted one either way.
    fn take(&mut self, limit: Limit) -> Option<S> {
        self.want(limit);
        self.states
            .iter()
            .rposition(|(l, _)| *l == limit)
            .map(|at| self.states.remove(at).1)
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

    /// A state for `limit` was made (`Some`) or could not be (`None`).
    fn made(&mut self, limit: Limit, state: Option<S>) {
        let at = self.wanted.iter().position(|w| *w == Some(limit));
        if let Some(i) = at {
            self.making[i] = self.making[i].saturating_sub(1);
        }
        match state {
            // Kept even when `limit` is no longer wanted: `surplus` closes it then.
            Some(state) => self.states.push((limit, state)),
            None => {
                self.refused = Some(limit);
                if let Some(i) = at {
                    self.wanted[i] = None;
                }
            }
        }
    }

    /// Takes out the states of limits no longer wanted, and any beyond
    /// [`PER_LIMIT`] (the oldest first), for the caller to close.
    fn surplus(&mut self) -> Vec<S> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.states.len() {
            let limit = self.states[i].0;
            if !self.wanted.contains(&Some(limit)) || self.have(limit) > PER_LIMIT {
                out.push(self.states.remove(i).1);
            } else {
                i += 1;
            }
        }
        out
    }

    /// Forgets everything, giving back the states to close.
    fn clear(&mut self) -> Vec<(Limit, S)> {
        self.wanted = [None; LIMITS];
        self.making = [0; LIMITS];
        self.refused = None;
        std::mem::take(&mut self.states)
    }
}

/// Makes states with `make` until every wanted limit of `stock` has its share, or
/// until `stop` says true. States are made and closed outside the lock.
fn refill_with<S>(
    stock: &Mutex<Stock<S>>,
    make: impl Fn(Limit) -> Option<S>,
    stop: &dyn Fn() -> bool,
) {
    loop {
        let (surplus, next) = {
            let mut stock = stock.lock();
            let surplus = stock.surplus();
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

/// A prepared state for `limit`, if the stock has one; never makes a state itself.
pub fn take(limit: Limit) -> Option<ChildState> {
    register();
    let state = STOCK.lock().take(limit);
    if state.is_some() {
        log::trace!("new: a prepared state");
    }
    state
}

/// The pool's idle work: makes states until every wanted limit has its stock, or
/// until `stop` says the worker has a job. Closes the states no longer wanted.
fn refill(stop: &dyn Fn() -> bool) {
    refill_with(&STOCK, prepare, stop);
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
/// functions installed, empty stack. `None` when memory (or the limit) ran out.
fn prepare(limit: Limit) -> Option<ChildState> {
    let state = ChildState::new(limit)?;
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
    Some(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    // States here are numbers: the unit tests run without a Lua library to call
    // (the module gets Lua's symbols from its host), so making real states is left
    // to spec/prepared_state_spec.lua.

    fn filled(stock: &Mutex<Stock<u32>>) {
        refill_with(stock, |_| Some(0), &|| false);
    }

    fn count(stock: &Mutex<Stock<u32>>, limit: Limit) -> usize {
        stock.lock().have(limit)
    }

    #[test]
    fn only_limits_new_asked_for_are_prepared() {
        let stock = Mutex::new(Stock::<u32>::new());
        filled(&stock);
        assert!(stock.lock().states.is_empty());
        assert!(stock.lock().take(None).is_none(), "out of an empty stock");
        filled(&stock);
        assert_eq!(count(&stock, None), PER_LIMIT);
    }

    #[test]
    fn a_state_made_for_one_limit_is_never_given_for_another() {
        let stock = Mutex::new(Stock::<u32>::new());
        let (a, b) = (Some(4 << 20), Some(8 << 20));
        let _ = stock.lock().take(a);
        filled(&stock);
        assert_eq!(count(&stock, a), PER_LIMIT);
        assert!(stock.lock().take(b).is_none(), "a state for another limit");
        assert!(
            stock.lock().take(None).is_none(),
            "a limited state for none"
        );
        // Three limits asked for, two kept: the oldest one's states go.
        filled(&stock);
        assert_eq!(
            (count(&stock, a), count(&stock, b), count(&stock, None)),
            (0, PER_LIMIT, PER_LIMIT)
        );
        assert!(stock.lock().take(b).is_some());
    }

    #[test]
    fn the_most_recently_made_state_goes_first() {
        let stock = Mutex::new(Stock::<u32>::new());
        let _ = stock.lock().take(None);
        let next = std::sync::atomic::AtomicU32::new(1);
        refill_with(
            &stock,
            |_| Some(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)),
            &|| false,
        );
        assert_eq!(stock.lock().take(None), Some(2));
        assert_eq!(stock.lock().take(None), Some(1));
        assert_eq!(stock.lock().take(None), None);
    }

    #[test]
    fn a_limit_no_state_fits_in_is_not_tried_again() {
        let stock = Mutex::new(Stock::<u32>::new());
        let tiny = Some(1000);
        let _ = stock.lock().take(tiny);
        let tries = std::sync::atomic::AtomicUsize::new(0);
        let make = |_| {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            None
        };
        refill_with(&stock, make, &|| false);
        let _ = stock.lock().take(tiny);
        refill_with(&stock, make, &|| false);
        assert_eq!(tries.into_inner(), 1);
    }

    #[test]
    fn refill_stops_when_the_worker_has_a_job() {
        let stock = Mutex::new(Stock::<u32>::new());
        let _ = stock.lock().take(None);
        refill_with(&stock, |_| Some(0), &|| true);
        assert_eq!(count(&stock, None), 0);
    }

    #[test]
    fn states_being_made_count_against_the_share() {
        // Two workers refilling at once make no more than the share between them.
        let stock = Mutex::new(Stock::<u32>::new());
        let _ = stock.lock().take(None);
        let first = stock.lock().next_to_make();
        let second = stock.lock().next_to_make();
        assert_eq!((first, second), (Some(None), Some(None)));
        assert_eq!(stock.lock().next_to_make(), None);
        stock.lock().made(None, Some(0));
        stock.lock().made(None, Some(0));
        assert_eq!(count(&stock, None), PER_LIMIT);
    }

    #[test]
    fn clear_gives_back_every_state() {
        let stock = Mutex::new(Stock::<u32>::new());
        let _ = stock.lock().take(None);
        filled(&stock);
        assert_eq!(stock.lock().clear().len(), PER_LIMIT);
        filled(&stock);
        assert!(stock.lock().states.is_empty(), "refilled after clear");
    }
}
