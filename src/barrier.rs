//! Keeps Rust panics out of Lua.
//!
//! A panic is a bug of this library, but it must never unwind into Lua's C frames (a
//! `longjmp`-based runtime, or LuaJIT's unwinder, with Lua's own state half updated).
//! Two rules enforce that:
//!
//! - [`catch`] is the barrier at the entry points Lua calls: it runs pure-Rust work
//!   under `catch_unwind` and turns a panic into a [`Panicked`] value, plain data that
//!   the entry point raises as a Lua error once everything the work owned is dropped.
//!   It never wraps a raising Lua call: errors of the Lua calls it wraps stop inside
//!   the `lua_pcall` of `raw::protected`.
//! - Everywhere else a panic aborts the process with a clear message, before any
//!   unwinding starts: the library's panic hook ([`install_hook`], in this library's
//!   own copy of the Rust runtime) aborts unless a [`catch`] on the same thread is
//!   waiting for it. Code run by Lua inside `lua_pcall` (protected bodies, hooks, the
//!   message handler, a child's whole chunk) runs under [`uncatchable`], which hides
//!   any enclosing [`catch`]: a panic there could only unwind through Lua's frames.
//!
//! Both are counters in a thread-local, set and restored around calls that always
//! return (`catch_unwind`, `lua_pcall`), never by a `Drop` guard: a Lua error crossing
//! a frame that owns a guard would be undefined behaviour in itself.

use std::any::Any;
use std::cell::Cell;
use std::io::Write;
use std::panic::{self, AssertUnwindSafe, PanicHookInfo};
use std::sync::Once;

thread_local! {
    /// How many [`catch`] calls on this thread would see a panic unwind to them.
    static CATCHING: Cell<u32> = const { Cell::new(0) };
}

/// What a caught panic said, in a fixed buffer (cut short beyond [`MESSAGE_MAX`]
/// bytes): raising it as a Lua error must not leave a heap value behind in the frame
/// that raises.
#[derive(Clone, Copy)]
pub struct Panicked {
    buf: [u8; MESSAGE_MAX],
    len: u8,
}

/// The longest message a [`Panicked`] keeps, prefix included (small enough for the
/// value to travel in `Result`s by value).
pub const MESSAGE_MAX: usize = 112;

const PREFIX: &[u8] = b"llthreads: internal error (panic): ";

impl Panicked {
    fn from_payload(payload: &(dyn Any + Send)) -> Panicked {
        let text = payload_text(payload);
        let mut p = Panicked {
            buf: [0; MESSAGE_MAX],
            len: 0,
        };
        let mut cursor = std::io::Cursor::new(&mut p.buf[..]);
        // A message longer than the buffer is cut short.
        let _ = cursor.write_all(PREFIX);
        let _ = cursor.write_all(text.as_bytes());
        p.len = cursor.position() as u8;
        p
    }

    /// `llthreads: internal error (panic): <the panic's message>`.
    pub fn message(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

fn payload_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

/// Runs `work` and returns its value, or what it panicked with. `work` must not make
/// Lua calls that can raise (see the module documentation).
///
/// The panic comes boxed: a `Result` as large as a [`Panicked`] was copied several
/// times on every call, a fifth of a channel send's or receive's own time.
pub fn catch<T>(work: impl FnOnce() -> T) -> Result<T, Box<Panicked>> {
    let _ = CATCHING.try_with(|c| c.set(c.get() + 1));
    let result = panic::catch_unwind(AssertUnwindSafe(work));
    let _ = CATCHING.try_with(|c| c.set(c.get() - 1));
    // The payload is dropped here, before the caller raises anything.
    result.map_err(|payload| Box::new(Panicked::from_payload(&*payload)))
}

/// Runs `f` (a `lua_pcall`, which always returns) with every enclosing [`catch`] of
/// this thread hidden: Lua runs code of this library under it, where a panic cannot
/// unwind, so a panic there aborts.
pub fn uncatchable<T>(f: impl FnOnce() -> T) -> T {
    let saved = CATCHING.try_with(|c| c.replace(0)).unwrap_or(0);
    let value = f();
    let _ = CATCHING.try_with(|c| c.set(saved));
    value
}

/// Installs the library's panic hook (once per process and library copy): a panic
/// that a [`catch`] is waiting for is left to it (and logged at debug level); any
/// other prints `llthreads: internal error (panic) at <place>: <message>; aborting`
/// and aborts the process before anything unwinds.
pub fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| panic::set_hook(Box::new(hook)));
}

fn hook(info: &PanicHookInfo<'_>) {
    let text = payload_text(info.payload());
    let place = info
        .location()
        .map(|l| format!("{}:{}", l.file(), l.line()))
        .unwrap_or_else(|| "an unknown place".to_owned());
    if CATCHING.try_with(|c| c.get() > 0).unwrap_or(false) {
        log::debug!("panic at {place}, turned into a Lua error: {text}");
        return;
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "llthreads: internal error (panic) at {place}: {text}; aborting"
    );
    let _ = err.flush();
    std::process::abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_panic_under_the_barrier_comes_back_as_its_message() {
        let caught = catch(|| -> u32 { panic!("boom {}", 42) });
        let p = caught.err().expect("the panic was not caught");
        assert_eq!(p.message(), b"llthreads: internal error (panic): boom 42");
        assert_eq!(catch(|| 7).ok(), Some(7));
    }

    #[test]
    fn a_long_panic_message_is_cut_to_the_buffer() {
        let long = "x".repeat(1000);
        let p = catch(|| panic!("{long}")).err().expect("not caught");
        assert_eq!(p.message().len(), MESSAGE_MAX);
        assert!(p.message().starts_with(PREFIX));
    }

    /// Runs one of the scenarios below in a fresh copy of this test binary, where the
    /// hook can be installed without affecting the other tests.
    fn run_scenario(name: &str) -> std::process::Output {
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "barrier::tests::scenario",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("LLTHREADS_BARRIER_SCENARIO", name)
            .output()
            .unwrap()
    }

    /// Not a test on its own: does nothing unless `run_scenario` started it.
    #[test]
    fn scenario() {
        let Ok(name) = std::env::var("LLTHREADS_BARRIER_SCENARIO") else {
            return;
        };
        install_hook();
        // Under the barrier, with the hook installed: caught, the process goes on.
        let p = catch(|| panic!("first")).err().expect("not caught");
        println!("caught: {}", String::from_utf8_lossy(p.message()));
        match name.as_str() {
            // As inside `lua_pcall` of `raw::protected` under an entry point's barrier.
            "uncatchable" => {
                let _ = catch(|| uncatchable(|| panic!("inside lua_pcall")));
            }
            // As in a C function Lua called, outside any barrier; even a foreign
            // `catch_unwind` (standing for Lua's frames) does not get to see it.
            _ => {
                let _ = panic::catch_unwind(|| panic!("outside the barrier"));
            }
        }
        println!("still running");
    }

    fn assert_aborted(out: &std::process::Output, message: &str) {
        use std::os::unix::process::ExitStatusExt;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("caught: llthreads: internal error (panic): first"),
            "{stdout}"
        );
        assert!(!stdout.contains("still running"), "{stdout}");
        let expected = format!("llthreads: internal error (panic) at src/barrier.rs:");
        assert!(stderr.contains(&expected), "{stderr}");
        assert!(stderr.contains(&format!("{message}; aborting")), "{stderr}");
    }

    #[test]
    fn a_panic_outside_the_barrier_aborts_with_a_clear_message() {
        assert_aborted(&run_scenario("outside"), "outside the barrier");
    }

    #[test]
    fn a_panic_where_lua_runs_our_code_aborts_even_under_a_barrier() {
        assert_aborted(&run_scenario("uncatchable"), "inside lua_pcall");
    }
}
