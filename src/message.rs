//! A value copied out of a Lua state and held outside every state, until a receiver
//! copies it into its own: a channel message.
//!
//! The encoded form is made for speed: a boolean or a number is kept inline (no
//! allocation, integer and float apart on 5.3+), a string is one buffer holding its
//! bytes, and anything else (tables, Lua functions as bytecode with their upvalues,
//! light userdata, C functions, channels) is one buffer of operations in the order the
//! copier met them. A channel inside a message
//! is a strong reference (`Arc`), so the channel lives while the message does.
//!
//! A buffer can be handed back once the message is delivered ([`Message::into_buffer`])
//! and used for a later message: a stream of messages then allocates nothing. (Freed
//! on the receiver's thread instead, the buffers of a fast sender keep the allocator
//! growing and trimming its heap, which costs more than the copies.)
//!
//! This module knows nothing about channels or Lua states: the referenced type is the
//! parameter `T`, other shared objects (pools) come as `object::Object`s, and the
//! copier (`copy.rs`) decides what is written and how it is read back.

use std::collections::HashMap;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::object::Object;

/// Operation codes of the encoded form. Every operation is complete once written, so
/// a partial encoding can be walked too.
mod op {
    pub const NIL: u8 = 0;
    pub const FALSE: u8 = 1;
    pub const TRUE: u8 = 2;
    /// An `i64` follows.
    pub const INT: u8 = 3;
    /// An `f64` follows.
    pub const NUM: u8 = 4;
    /// A `usize` length and the bytes follow.
    pub const STR: u8 = 5;
    /// A pointer follows.
    pub const LIGHT: u8 = 6;
    /// A C function pointer follows.
    pub const CFUNC: u8 = 7;
    /// A pointer from `Arc::into_raw` follows: one strong reference, owned here.
    pub const REF: u8 = 8;
    /// A new table: a `u32` array size hint follows, then key/value pairs, then END.
    pub const TABLE: u8 = 9;
    pub const END: u8 = 10;
    /// A table or function met before in this value: its `u32` number (tables and
    /// functions are numbered together, in the order they came) follows.
    pub const BACKREF: u8 = 11;
    /// A Lua function: a `usize` length and its bytecode follow, then one entry per
    /// upvalue in order (a value, or JOIN), then END.
    pub const FUNC: u8 = 12;
    /// This upvalue is the one of an earlier function: its `u32` number and the `u32`
    /// upvalue index there follow.
    pub const JOIN: u8 = 13;
    /// The global table of the receiving state.
    pub const GLOBALS: u8 = 14;
    /// A C function known by name: a `usize` length and `module\0field` follow.
    pub const NAMED: u8 = 15;
    /// A pointer from `Box::into_raw` of a `Box<Box<dyn Object>>` follows, owned here.
    pub const OBJECT: u8 = 16;
}

const WORD: usize = std::mem::size_of::<usize>();

enum Repr {
    Bool(bool),
    // Lua 5.1, 5.2 and LuaJIT have no integer subtype: every number is a `Num` there.
    #[cfg_attr(
        not(any(feature = "lua53", feature = "lua54", feature = "lua55")),
        allow(dead_code)
    )]
    Int(i64),
    Num(f64),
    Str(Vec<u8>),
    Encoded {
        bytes: Vec<u8>,
        refs: bool,
    },
}

/// One value, owned outside every Lua state. Holds a strong reference to each `T`
/// (channel) inside it.
pub struct Message<T> {
    repr: Repr,
    _refs: PhantomData<Arc<T>>,
}

// SAFETY: a message owns plain bytes, strong references to `T`, which may be sent
// and shared across threads when `T: Send + Sync` (as for `Arc<T>`), and boxed
// objects, which are `Send + Sync` by their trait. Light userdata and C function
// pointers are only carried as values, never dereferenced here.
unsafe impl<T: Send + Sync> Send for Message<T> {}

impl<T> Message<T> {
    fn new(repr: Repr) -> Self {
        Message {
            repr,
            _refs: PhantomData,
        }
    }

    pub fn boolean(b: bool) -> Self {
        Self::new(Repr::Bool(b))
    }

    #[cfg_attr(
        not(any(feature = "lua53", feature = "lua54", feature = "lua55")),
        allow(dead_code)
    )]
    pub fn integer(i: i64) -> Self {
        Self::new(Repr::Int(i))
    }

    pub fn number(n: f64) -> Self {
        Self::new(Repr::Num(n))
    }

    /// A string message: its bytes, copied once (into `buf`, whose capacity is used
    /// when it is large enough).
    pub fn string(s: &[u8], mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(s);
        Self::new(Repr::Str(buf))
    }

    /// The message's buffer, for another message, with the references it held
    /// released; `None` for a message without one.
    pub fn into_buffer(mut self) -> Option<Vec<u8>> {
        let repr = std::mem::replace(&mut self.repr, Repr::Bool(false));
        match repr {
            Repr::Str(buf) => Some(buf),
            Repr::Encoded { bytes, refs } => {
                if refs {
                    // SAFETY: as in `drop`; `self` no longer holds these bytes, so
                    // they are released once.
                    unsafe { release_refs::<T>(&bytes) };
                }
                Some(bytes)
            }
            _ => None,
        }
    }

    /// What the message holds, for the copier to write into a state.
    pub fn view(&self) -> View<'_, T> {
        match &self.repr {
            Repr::Bool(b) => View::Bool(*b),
            Repr::Int(i) => View::Int(*i),
            Repr::Num(n) => View::Num(*n),
            Repr::Str(s) => View::Str(s),
            Repr::Encoded { bytes, .. } => View::Encoded(Reader::new(bytes)),
        }
    }
}

impl<T> Drop for Message<T> {
    fn drop(&mut self) {
        if let Repr::Encoded { bytes, refs: true } = &self.repr {
            // SAFETY: every REF operation in an encoding holds one strong reference,
            // taken by `Encoder::reference`; this releases each exactly once.
            unsafe { release_refs::<T>(bytes) };
        }
    }
}

/// Drops the strong reference of each REF operation in `bytes`, and the object of
/// each OBJECT operation.
///
/// # Safety
/// `bytes` is (a prefix of) an encoding whose REF operations each own a reference to
/// a `T` made by `Arc::into_raw`, and whose OBJECT operations each own their box, not
/// released yet.
unsafe fn release_refs<T>(bytes: &[u8]) {
    let mut reader = Reader::<T>::new(bytes);
    while let Some(item) = reader.next() {
        match item {
            // SAFETY: see the function's contract.
            Item::Ref(ptr) => unsafe { Arc::decrement_strong_count(ptr) },
            // SAFETY: as above; the box came from `Encoder::object`.
            Item::Object(ptr) => drop(unsafe { Box::from_raw(ptr.cast_mut()) }),
            _ => {}
        }
    }
}

/// What a message holds.
pub enum View<'a, T> {
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(&'a [u8]),
    Encoded(Reader<'a, T>),
}

/// One operation of an encoding.
pub enum Item<'a, T> {
    Nil,
    Bool(bool),
    Int(i64),
    Num(f64),
    Str(&'a [u8]),
    Light(*mut c_void),
    CFunction(usize),
    /// Borrowed from the message, which keeps it alive.
    Ref(*const T),
    /// Borrowed from the message, which owns it.
    Object(*const Box<dyn Object>),
    /// A new table with this array size hint; its key/value pairs follow, then `End`.
    Table(u32),
    End,
    /// The table or function numbered so (from 0, in the order they came).
    BackRef(u32),
    /// A Lua function's bytecode; its upvalues follow, then `End`.
    Function(&'a [u8]),
    /// The current upvalue is upvalue `.1` of function number `.0`.
    Join(u32, u32),
    /// The receiving state's global table.
    Globals,
    /// The C function the receiving state's loaded modules hold as `module\0field`.
    Named(&'a [u8]),
}

/// Walks an encoding, one operation at a time.
pub struct Reader<'a, T> {
    bytes: &'a [u8],
    pos: usize,
    _refs: PhantomData<*const T>,
}

impl<'a, T> Reader<'a, T> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader {
            bytes,
            pos: 0,
            _refs: PhantomData,
        }
    }

    /// The next `len` bytes; `None` past the end (never for an encoding made by
    /// [`Encoder`]: every operation is written whole).
    fn bytes(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let out = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(out)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.bytes(N)?.try_into().ok()
    }

    fn word(&mut self) -> Option<usize> {
        self.take::<WORD>().map(usize::from_ne_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take::<4>().map(u32::from_ne_bytes)
    }

    /// The next operation, or `None` at the end of the encoding.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Item<'a, T>> {
        let code = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(match code {
            op::NIL => Item::Nil,
            op::FALSE => Item::Bool(false),
            op::TRUE => Item::Bool(true),
            op::INT => Item::Int(i64::from_ne_bytes(self.take::<8>()?)),
            op::NUM => Item::Num(f64::from_ne_bytes(self.take::<8>()?)),
            op::STR => {
                let len = self.word()?;
                Item::Str(self.bytes(len)?)
            }
            op::LIGHT => Item::Light(self.word()? as *mut c_void),
            op::CFUNC => Item::CFunction(self.word()?),
            op::REF => Item::Ref(self.word()? as *const T),
            op::OBJECT => Item::Object(self.word()? as *const Box<dyn Object>),
            op::TABLE => Item::Table(self.u32()?),
            op::END => Item::End,
            op::BACKREF => Item::BackRef(self.u32()?),
            op::FUNC => {
                let len = self.word()?;
                Item::Function(self.bytes(len)?)
            }
            op::JOIN => Item::Join(self.u32()?, self.u32()?),
            op::GLOBALS => Item::Globals,
            op::NAMED => {
                let len = self.word()?;
                Item::Named(self.bytes(len)?)
            }
            _ => return None,
        })
    }
}

/// Builds the encoded form of one value, operation by operation.
pub struct Encoder<T> {
    buf: Vec<u8>,
    /// Tables and functions met so far, by their address in the source state, with
    /// their number.
    tables: Option<HashMap<*const c_void, u32>>,
    /// Upvalues met so far, by their identity in the source state, with the number of
    /// the function and the index they were first written under.
    upvalues: Option<HashMap<*const c_void, (u32, u32)>>,
    next_table: u32,
    refs: bool,
    _refs: PhantomData<Arc<T>>,
}

impl<T> Default for Encoder<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Encoder<T> {
    pub fn new() -> Self {
        Self::with_buffer(Vec::with_capacity(64))
    }

    /// An encoder writing into `buf` (emptied first).
    pub fn with_buffer(mut buf: Vec<u8>) -> Self {
        buf.clear();
        Encoder {
            buf,
            tables: None,
            upvalues: None,
            next_table: 0,
            refs: false,
            _refs: PhantomData,
        }
    }

    fn code(&mut self, code: u8) {
        self.buf.push(code);
    }

    fn word(&mut self, w: usize) {
        self.buf.extend_from_slice(&w.to_ne_bytes());
    }

    pub fn nil(&mut self) {
        self.code(op::NIL);
    }

    pub fn boolean(&mut self, b: bool) {
        self.code(if b { op::TRUE } else { op::FALSE });
    }

    #[cfg_attr(
        not(any(feature = "lua53", feature = "lua54", feature = "lua55")),
        allow(dead_code)
    )]
    pub fn integer(&mut self, i: i64) {
        self.code(op::INT);
        self.buf.extend_from_slice(&i.to_ne_bytes());
    }

    pub fn number(&mut self, n: f64) {
        self.code(op::NUM);
        self.buf.extend_from_slice(&n.to_ne_bytes());
    }

    pub fn string(&mut self, s: &[u8]) {
        self.code(op::STR);
        self.word(s.len());
        self.buf.extend_from_slice(s);
    }

    pub fn light(&mut self, p: *mut c_void) {
        self.code(op::LIGHT);
        self.word(p as usize);
    }

    pub fn cfunction(&mut self, f: usize) {
        self.code(op::CFUNC);
        self.word(f);
    }

    /// Writes a strong reference to `*ptr`.
    ///
    /// # Safety
    /// `ptr` comes from `Arc::into_raw` of an `Arc<T>` that is alive now.
    pub unsafe fn reference(&mut self, ptr: *const T) {
        // SAFETY: see the function's contract; the reference taken is owned by the
        // operation written next and released by `Message`'s or `Encoder`'s drop.
        unsafe { Arc::increment_strong_count(ptr) };
        self.code(op::REF);
        self.word(ptr as usize);
        self.refs = true;
    }

    /// Writes an object (see `object.rs`), which the message owns from now on.
    pub fn object(&mut self, object: Box<dyn Object>) {
        let ptr = Box::into_raw(Box::new(object));
        self.code(op::OBJECT);
        self.word(ptr as usize);
        self.refs = true;
    }

    /// Starts the table whose address in the source is `key`. Returns `true` when it
    /// was met before in this value: a back reference is written instead, and the
    /// caller writes nothing more for it.
    pub fn table_begin(&mut self, key: *const c_void, narr: u32) -> bool {
        let tables = self.tables.get_or_insert_with(HashMap::new);
        if let Some(&n) = tables.get(&key) {
            self.code(op::BACKREF);
            self.buf.extend_from_slice(&n.to_ne_bytes());
            return true;
        }
        tables.insert(key, self.next_table);
        self.next_table += 1;
        self.code(op::TABLE);
        self.buf.extend_from_slice(&narr.to_ne_bytes());
        false
    }

    pub fn table_end(&mut self) {
        self.code(op::END);
    }

    /// Writes a back reference when the table or function known as `key` was met
    /// before in this value, and says so.
    pub fn seen(&mut self, key: *const c_void) -> bool {
        let Some(&n) = self.tables.as_ref().and_then(|t| t.get(&key)) else {
            return false;
        };
        self.code(op::BACKREF);
        self.buf.extend_from_slice(&n.to_ne_bytes());
        true
    }

    /// Starts the function known as `key` (not [`Encoder::seen`]) with its bytecode;
    /// its upvalues follow, then [`Encoder::function_end`].
    pub fn function_begin(&mut self, key: *const c_void, code: &[u8]) {
        let tables = self.tables.get_or_insert_with(HashMap::new);
        tables.insert(key, self.next_table);
        self.next_table += 1;
        self.code(op::FUNC);
        self.word(code.len());
        self.buf.extend_from_slice(code);
    }

    /// For upvalue `n` of the function known as `function`, whose identity is `id`:
    /// writes a join and returns `true` when an earlier function has that upvalue;
    /// else remembers it here and returns `false` (its value follows).
    pub fn shared_upvalue(&mut self, n: u32, id: *const c_void, function: *const c_void) -> bool {
        let upvalues = self.upvalues.get_or_insert_with(HashMap::new);
        if let Some(&(f, m)) = upvalues.get(&id) {
            self.code(op::JOIN);
            self.buf.extend_from_slice(&f.to_ne_bytes());
            self.buf.extend_from_slice(&m.to_ne_bytes());
            return true;
        }
        let number = self.tables.as_ref().and_then(|t| t.get(&function).copied());
        if let Some(f) = number {
            upvalues.insert(id, (f, n));
        }
        false
    }

    pub fn function_end(&mut self) {
        self.code(op::END);
    }

    /// The receiving state's global table.
    pub fn globals(&mut self) {
        self.code(op::GLOBALS);
    }

    /// The C function known as `name` (`module\0field`).
    pub fn named(&mut self, name: &[u8]) {
        self.code(op::NAMED);
        self.word(name.len());
        self.buf.extend_from_slice(name);
    }

    /// The message, holding the encoder's buffer.
    pub fn finish(mut self) -> Message<T> {
        let bytes = std::mem::take(&mut self.buf);
        let refs = std::mem::replace(&mut self.refs, false);
        Message::new(Repr::Encoded { bytes, refs })
    }
}

impl<T> Drop for Encoder<T> {
    fn drop(&mut self) {
        if self.refs {
            // SAFETY: an encoding left unfinished (the copy was refused) still owns
            // the references its REF operations took; `finish` clears `refs` when
            // they move to the message.
            unsafe { release_refs::<T>(&self.buf) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoding_reads_back_in_order() {
        let mut e = Encoder::<()>::new();
        assert!(!e.table_begin(1 as *const c_void, 2));
        e.integer(1);
        e.string(b"one");
        e.number(2.5);
        e.boolean(true);
        assert!(e.table_begin(1 as *const c_void, 0));
        e.table_end();
        let m = e.finish();
        let View::Encoded(mut r) = m.view() else {
            panic!("not encoded")
        };
        assert!(matches!(r.next(), Some(Item::Table(2))));
        assert!(matches!(r.next(), Some(Item::Int(1))));
        assert!(matches!(r.next(), Some(Item::Str(b"one"))));
        assert!(matches!(r.next(), Some(Item::Num(n)) if n == 2.5));
        assert!(matches!(r.next(), Some(Item::Bool(true))));
        assert!(matches!(r.next(), Some(Item::BackRef(0))));
        assert!(matches!(r.next(), Some(Item::End)));
        assert!(r.next().is_none());
    }

    #[test]
    fn references_are_released_with_the_message_or_an_unfinished_encoding() {
        let shared = Arc::new(7u32);
        let raw = Arc::as_ptr(&shared);
        let mut e = Encoder::<u32>::new();
        // SAFETY: `shared` is alive.
        unsafe { e.reference(raw) };
        let m = e.finish();
        assert_eq!(Arc::strong_count(&shared), 2);
        drop(m);
        assert_eq!(Arc::strong_count(&shared), 1);

        let mut e = Encoder::<u32>::new();
        e.table_begin(1 as *const c_void, 0);
        // SAFETY: as above.
        unsafe { e.reference(raw) };
        assert_eq!(Arc::strong_count(&shared), 2);
        drop(e);
        assert_eq!(Arc::strong_count(&shared), 1);
    }

    /// An object that counts its live copies; never pushed in these tests.
    struct Counted(Arc<()>);

    impl Object for Counted {
        fn carry(&self) -> Box<dyn Object> {
            Box::new(Counted(Arc::clone(&self.0)))
        }
        unsafe fn push(&self, _: crate::raw::RawState) {
            unreachable!("not pushed here")
        }
    }

    #[test]
    fn objects_go_with_the_message_its_buffer_or_an_unfinished_encoding() {
        let live = Arc::new(());
        let mut e = Encoder::<u32>::new();
        e.object(Counted(Arc::clone(&live)).carry());
        e.string(b"after");
        let m = e.finish();
        assert_eq!(Arc::strong_count(&live), 2);
        let View::Encoded(mut r) = m.view() else {
            panic!("not encoded")
        };
        assert!(matches!(r.next(), Some(Item::Object(_))));
        assert!(matches!(r.next(), Some(Item::Str(b"after"))));
        drop(m);
        assert_eq!(Arc::strong_count(&live), 1);

        let mut e = Encoder::<u32>::new();
        e.object(Box::new(Counted(Arc::clone(&live))));
        let buf = e.finish().into_buffer();
        assert!(buf.is_some());
        assert_eq!(Arc::strong_count(&live), 1);

        let mut e = Encoder::<u32>::new();
        e.object(Box::new(Counted(Arc::clone(&live))));
        drop(e);
        assert_eq!(Arc::strong_count(&live), 1);
    }

    #[test]
    fn a_message_of_one_number_is_small() {
        // The queue stores messages inline: a one-number message costs only this.
        assert!(std::mem::size_of::<Message<()>>() <= 32);
    }

    #[test]
    fn a_buffer_handed_back_releases_its_references_once() {
        let shared = Arc::new(7u32);
        let mut e = Encoder::<u32>::new();
        // SAFETY: `shared` is alive.
        unsafe { e.reference(Arc::as_ptr(&shared)) };
        let buf = e.finish().into_buffer().unwrap();
        assert_eq!(Arc::strong_count(&shared), 1);
        let m = Message::<u32>::string(b"reused", buf);
        assert!(matches!(m.view(), View::Str(b"reused")));
    }
}
