//! Keeps this library mapped for the life of the process.
//!
//! When a host closes a Lua state it unloads the C modules that state loaded. A
//! detached child may still be running code of this library at that moment (or be
//! about to return into it); unmapping it would crash the child. So the library
//! marks itself `RTLD_NODELETE` the first time it is opened.

use std::ffi::c_void;
use std::sync::Once;

static PIN: Once = Once::new();

pub fn pin_library() {
    PIN.call_once(|| {
        // SAFETY: `dladdr` reads the loader's tables for an address inside this
        // library; on success `dli_fname` is a NUL-terminated path owned by the loader.
        // `dlopen` with `RTLD_NOLOAD` only takes another reference to the already
        // loaded object and adds `RTLD_NODELETE`; the handle is deliberately never
        // closed.
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            let here = pin_library as *const c_void;
            if libc::dladdr(here, &mut info) == 0 || info.dli_fname.is_null() {
                log::warn!("could not find this library's path; not pinned");
                return;
            }
            let handle = libc::dlopen(
                info.dli_fname,
                libc::RTLD_NOW | libc::RTLD_NOLOAD | libc::RTLD_NODELETE,
            );
            if handle.is_null() {
                log::warn!("could not pin the library; it may be unloaded while threads run");
            } else {
                let path = std::ffi::CStr::from_ptr(info.dli_fname);
                log::debug!("library pinned: {}", path.to_string_lossy());
            }
        }
    });
}
