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
//!   before and after its libraries were opened, and only if its paths are what
//!   those values give (they may have changed and changed back in between); the
//!   others are closed by a worker.
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
use std::os::unix::ffi::OsStrExt;

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
/// libraries were opened. The state is tagged as matching no environment (never handed
/// out, closed by the next refill) when the environment changed meanwhile, and also
/// when its package paths are not those that environment gives: the variables may
/// have changed and changed back while `luaL_openlibs` read them (another thread's
/// `setenv`, twice within those microseconds), so equal readings around it prove
/// nothing by themselves. `None` when memory (or the limit) ran out.
fn prepare(limit: Limit) -> Option<(PathVars, ChildState)> {
    let state = ChildState::new(limit)?;
    let before = PathVars::now();
    let mut body = |c: RawState| -> c_int {
        // SAFETY: protected on `c`, a fresh state used by this thread only, with the
        // free slots `install` and `push_paths` need (the body's frame has
        // LUA_MINSTACK).
        unsafe {
            ffi::luaL_openlibs(c);
            coroutine::install(c);
            push_paths(c)
        }
    };
    // SAFETY: (1) `c` is fresh and owned by `state`, used by this thread only, with
    // LUA_MINSTACK free slots; (2) the body owns nothing, touches no other state and
    // does not panic.
    let status = unsafe { protected(state.raw(), 0, 2, &mut body) };
    if status != ffi::LUA_OK {
        return None; // `state` closes, with the error object on it
    }
    // SAFETY: `c` is valid, used by this thread only, with the two paths on top;
    // reading strings and emptying the stack cannot raise.
    let paths = unsafe {
        let paths = [read_string(state.raw(), -2), read_string(state.raw(), -1)];
        ffi::lua_settop(state.raw(), 0);
        paths
    };
    let env = if PathVars::now() == before && before.gives(&paths) {
        before
    } else {
        PathVars(None)
    };
    Some((env, state))
}

/// Pushes `package.path` and `package.cpath` of `c` (from `package.loaded`, as the
/// library opened them) and returns 2.
///
/// # Safety
/// `c` is a valid state this thread may use, with the standard libraries opened and
/// four free stack slots; it may raise (a memory error), so it runs protected.
unsafe fn push_paths(c: RawState) -> c_int {
    // SAFETY: as the caller guarantees; each call leaves what the next one reads.
    unsafe {
        ffi::lua_getfield(c, ffi::LUA_REGISTRYINDEX, c"_LOADED".as_ptr());
        ffi::lua_getfield(c, -1, c"package".as_ptr());
        ffi::lua_getfield(c, -1, c"path".as_ptr());
        ffi::lua_getfield(c, -2, c"cpath".as_ptr());
    }
    2
}

/// The bytes of the string at `idx` of `c`; `None` for anything else.
///
/// # Safety
/// `c` is a valid state this thread may use and `idx` an acceptable index.
unsafe fn read_string(c: RawState, idx: c_int) -> Option<Vec<u8>> {
    // SAFETY: as the caller guarantees; `lua_tolstring` on a string neither converts
    // nor raises, and its bytes stay valid while the value is on the stack.
    unsafe {
        if ffi::lua_type(c, idx) != ffi::LUA_TSTRING {
            return None;
        }
        let mut len = 0;
        let s = ffi::lua_tolstring(c, idx, &mut len);
        Some(std::slice::from_raw_parts(s.cast::<u8>(), len).to_vec())
    }
}

impl PathVars {
    /// Whether `paths` (`package.path`, `package.cpath`) are those `luaL_openlibs`
    /// makes of these values.
    fn gives(&self, paths: &[Option<Vec<u8>>; 2]) -> bool {
        let Some(vars) = &self.0 else {
            return false;
        };
        // The path's names come first, then the cpath's, each the version's own name
        // first: the first one set is the one read.
        let half = PATH_VARS.len() / 2;
        [&vars[..half], &vars[half..]]
            .iter()
            .zip(paths)
            .enumerate()
            .all(|(which, (names, got))| {
                let value = names.iter().flatten().next().map(|v| v.as_bytes());
                match (got, default_path(which, value, got.as_deref())) {
                    (Some(got), Some(def)) => *got == expand(value, &def),
                    _ => false,
                }
            })
    }
}

/// The built-in default for `package.path` (`which` 0) or `package.cpath` (1): what
/// `luaL_openlibs` uses where the variable is unset, and in place of `;;`.
/// Asked of Lua once per process: a state opened with the registry's `LUA_NOENV` set
/// (as `lua -E` does) reads no variable at all.
#[cfg(not(feature = "lua51"))]
fn default_path(which: usize, _value: Option<&[u8]>, _got: Option<&[u8]>) -> Option<Vec<u8>> {
    static DEFAULTS: std::sync::OnceLock<Option<[Option<Vec<u8>>; 2]>> = std::sync::OnceLock::new();
    let defaults = DEFAULTS.get_or_init(|| {
        let state = ChildState::new(None)?;
        let mut body = |c: RawState| -> c_int {
            // SAFETY: protected on `c`, a fresh state used by this thread only, with
            // LUA_MINSTACK free slots.
            unsafe {
                ffi::lua_pushboolean(c, 1);
                ffi::lua_setfield(c, ffi::LUA_REGISTRYINDEX, c"LUA_NOENV".as_ptr());
                ffi::luaL_openlibs(c);
                push_paths(c)
            }
        };
        // SAFETY: (1) `c` is fresh and owned by `state`, used by this thread only,
        // with LUA_MINSTACK free slots; (2) the body owns nothing, touches no other
        // state and does not panic.
        let status = unsafe { protected(state.raw(), 0, 2, &mut body) };
        // SAFETY: `c` is valid and used by this thread only; on success the two
        // paths are on top; reading strings cannot raise.
        (status == ffi::LUA_OK)
            .then(|| unsafe { [read_string(state.raw(), -2), read_string(state.raw(), -1)] })
    });
    defaults.as_ref()?[which].clone()
}

/// As above, for Lua 5.1, which has no `LUA_NOENV`: learned from the first state whose
/// variable was unset or held `;;` (and unchanged around it). A state whose reading
/// changed and changed back while it was learned gives a default no later state
/// matches (the stock then stays empty), unless the same change comes again.
#[cfg(feature = "lua51")]
fn default_path(which: usize, value: Option<&[u8]>, got: Option<&[u8]>) -> Option<Vec<u8>> {
    static LEARNED: Mutex<[Option<Vec<u8>>; 2]> = Mutex::new([None, None]);
    let mut learned = LEARNED.lock();
    if learned[which].is_none() {
        learned[which] = solve_default(value, got?);
    }
    // Without `;;` the default takes no part: any will do.
    learned[which]
        .clone()
        .or_else(|| value.filter(|v| !contains(v, b";;")).map(|_| Vec::new()))
}

/// The default that makes `expand(value, default)` equal `got`, if one does.
#[cfg(feature = "lua51")]
fn solve_default(value: Option<&[u8]>, got: &[u8]) -> Option<Vec<u8>> {
    let Some(value) = value else {
        return Some(got.to_vec());
    };
    // Where the default goes: every ";;" becomes ";\x01;", every "\x01" the default.
    let marked = replace_all(value, b";;", b";\x01;");
    let pieces: Vec<&[u8]> = marked.split(|b| *b == 1).collect();
    let marks = pieces.len() - 1;
    let fixed: usize = pieces.iter().map(|p| p.len()).sum();
    if marks == 0 || got.len() < fixed || !(got.len() - fixed).is_multiple_of(marks) {
        return None;
    }
    let start = pieces[0].len();
    let def = got[start..start + (got.len() - fixed) / marks].to_vec();
    (expand(Some(value), &def) == got).then_some(def)
}

/// What `luaL_openlibs` makes of a path variable's `value` with built-in default
/// `def` (each version's `setpath` in loadlib.c).
fn expand(value: Option<&[u8]>, def: &[u8]) -> Vec<u8> {
    let Some(value) = value else {
        return def.to_vec();
    };
    #[cfg(any(feature = "lua54", feature = "lua55"))]
    {
        // 5.4: the first ";;" only, with the separators around it kept only where
        // something precedes or follows it.
        let Some(at) = find(value, b";;") else {
            return value.to_vec();
        };
        let mut out = Vec::with_capacity(value.len() + def.len());
        if at > 0 {
            out.extend_from_slice(&value[..at]);
            out.push(b';');
        }
        out.extend_from_slice(def);
        if at + 2 < value.len() {
            out.push(b';');
            out.extend_from_slice(&value[at + 2..]);
        }
        out
    }
    #[cfg(not(any(feature = "lua54", feature = "lua55")))]
    {
        // 5.1 to 5.3 and LuaJIT: every ";;" becomes ";\x01;", then every "\x01" (one
        // the variable held too) the default.
        replace_all(&replace_all(value, b";;", b";\x01;"), b"\x01", def)
    }
}

/// Where `needle` first occurs in `hay`.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(feature = "lua51")]
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    find(hay, needle).is_some()
}

/// `hay` with every occurrence of `from`, left to right and not overlapping, replaced
/// by `to` (as `luaL_gsub` does).
#[cfg(not(any(feature = "lua54", feature = "lua55")))]
fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut rest = hay;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
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

    #[test]
    fn the_default_goes_where_the_variable_has_two_separators() {
        assert_eq!(expand(None, b"D"), b"D");
        assert_eq!(expand(Some(b"/x"), b"D"), b"/x");
        #[cfg(any(feature = "lua54", feature = "lua55"))]
        {
            assert_eq!(expand(Some(b";;"), b"D"), b"D");
            assert_eq!(expand(Some(b"/a;;/b;;"), b"D"), b"/a;D;/b;;");
        }
        #[cfg(not(any(feature = "lua54", feature = "lua55")))]
        {
            assert_eq!(expand(Some(b";;"), b"D"), b";D;");
            assert_eq!(expand(Some(b"/a;;/b;;\x01"), b"D"), b"/a;D;/b;D;D");
        }
    }

    #[cfg(feature = "lua51")]
    #[test]
    fn the_default_is_learned_only_from_paths_the_variable_explains() {
        assert_eq!(solve_default(None, b"X"), Some(b"X".to_vec()));
        assert_eq!(
            solve_default(Some(b"/a;;/b;;"), b"/a;D;/b;D;"),
            Some(b"D".to_vec())
        );
        assert_eq!(solve_default(Some(b"/a;;"), b"/b;D;"), None);
        assert_eq!(solve_default(Some(b"/a"), b"/a"), None);
    }
}
