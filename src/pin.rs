//! Keeps the shared library behind a copied C function mapped.
//!
//! A C function copied to another state is a bare code pointer: nothing there holds
//! the library it lives in. When the state that loaded that library closes (a child
//! state closed in `join`, say), Lua unloads it, and calling the copy would jump into
//! unmapped memory. So the first time a library's function is copied, the library is
//! marked `RTLD_NODELETE`: it then stays mapped for the life of the process, as this
//! library itself does (`build.rs`).

use std::ffi::c_void;

use parking_lot::Mutex;

/// Base addresses of the libraries pinned so far (few: one per C module whose
/// functions were copied).
static PINNED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Pins the library holding `code`. Pure Rust and libc: callable inside a copy.
pub fn library_of(code: *const c_void) {
    // SAFETY: `dladdr` only reads the loader's tables for an address; on success
    // `dli_fname` is a NUL-terminated path owned by the loader.
    let info = unsafe {
        let mut info: libc::Dl_info = std::mem::zeroed();
        if libc::dladdr(code, &mut info) == 0 || info.dli_fname.is_null() {
            return;
        }
        info
    };
    let base = info.dli_fbase as usize;
    let mut pinned = PINNED.lock();
    if pinned.contains(&base) {
        return;
    }
    // SAFETY: `RTLD_NOLOAD` only takes another reference to an object that is loaded
    // (it holds `code`) and adds `RTLD_NODELETE`; the handle is deliberately kept.
    let handle = unsafe {
        libc::dlopen(
            info.dli_fname,
            libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
        )
    };
    if handle.is_null() {
        log::warn!("could not pin the library of a copied C function");
    } else {
        pinned.push(base);
    }
}
