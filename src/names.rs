//! Small shared types and names, at the bottom of the dependency graph: every other
//! module may use these, and this one uses none of them.

use std::ffi::CStr;

/// Which name the module was loaded as; it names `interrupted_error`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Module {
    #[default]
    Llthreads,
    Llthreads2,
}

impl Module {
    pub fn interrupted_error(self) -> &'static CStr {
        match self {
            Module::Llthreads => c"llthreads: thread was interrupted",
            Module::Llthreads2 => c"llthreads2: thread was interrupted",
        }
    }
}

/// Registry field holding a state's logger. A string key, so that every copy of this
/// library loaded in the process (e.g. as `llthreads` and as `llthreads2`) finds it.
pub const LOGGER_FIELD: &CStr = c"LLThread logger holder";
