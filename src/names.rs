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

/// Text in a fixed buffer, cut at its capacity: an error message that owns no heap
/// memory, so it can be alive in a frame that a Lua error may cross, and can be raised
/// once that frame's owners are gone.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Text {
    buf: [u8; 256],
    len: usize,
}

impl Text {
    pub fn new(text: &str) -> Text {
        let mut t = Text {
            buf: [0; 256],
            len: 0,
        };
        t.push(text.as_bytes());
        t
    }

    /// Appends `bytes`, as much as fits.
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// A thread's name as the OS keeps it: at most 15 bytes (Linux's limit), cut at a
/// character boundary when longer, never holding a zero byte.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ThreadName {
    /// The name, then zeros: always NUL-terminated.
    buf: [u8; 16],
}

impl ThreadName {
    /// The longest name the OS keeps, in bytes.
    pub const MAX: usize = 15;

    /// `name` cut to [`ThreadName::MAX`] bytes; `None` when it holds a zero byte.
    pub fn new(name: &[u8]) -> Option<ThreadName> {
        if name.contains(&0) {
            return None;
        }
        let mut len = name.len().min(Self::MAX);
        // Do not cut a UTF-8 sequence in two: drop continuation bytes at the cut.
        if len < name.len() {
            while len > 0 && (name[len] & 0xC0) == 0x80 {
                len -= 1;
            }
        }
        let mut buf = [0u8; 16];
        buf[..len].copy_from_slice(&name[..len]);
        Some(ThreadName { buf })
    }

    pub fn as_bytes(&self) -> &[u8] {
        let len = self.buf.iter().position(|&b| b == 0).unwrap_or(Self::MAX);
        &self.buf[..len]
    }

    pub fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_until_nul(&self.buf).unwrap_or(c"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_thread_name_is_cut_at_a_character_boundary() {
        assert_eq!(ThreadName::new(b"worker").unwrap().as_bytes(), b"worker");
        let long = ThreadName::new(b"a-very-long-thread-name").unwrap();
        assert_eq!(long.as_bytes(), b"a-very-long-thr");
        // 14 ASCII bytes then a two-byte character: cutting at 15 would split it.
        let name = "abcdefghijklmn\u{e9}".as_bytes();
        assert_eq!(ThreadName::new(name).unwrap().as_bytes(), b"abcdefghijklmn");
        assert!(ThreadName::new(b"nul\0inside").is_none());
    }
}
