//! A channel: a queue of messages that any thread may send to and receive from,
//! unbounded, bounded, or a rendezvous (capacity 0: a send returns once a receiver
//! took its message).
//!
//! One mutex guards the queue, the closed flag and two [`WaitList`]s, receivers and
//! senders. A thread that cannot go on registers its waiter in the list of the side it
//! waits on, re-checking under the same lock, and parks; whoever makes its condition
//! true (a message queued, room made, the channel closed) takes one waiter off that
//! list and wakes it, after releasing the lock, unless enough are on their way
//! already: no more than there are messages (free places) and CPUs. A waiter that
//! comes back takes what it was woken for and wakes the next one if more is there; one
//! that leaves without using it (timed out, interrupted, or a `select` that took
//! something else) passes the wake-up on to the next registered waiter when the
//! condition still holds: no wake-up is lost, and one message wakes one receiver, not
//! all of them.
//!
//! An unbounded channel splits its queue in two: senders append under that mutex,
//! receivers take from an older part under a lock of their own, and a receiver that
//! finds the older part empty takes both locks and moves everything queued over in
//! one swap ([`Head`]). A stream from one thread to another then rarely has both
//! sides on the same lock. Registering to wait takes both locks, so the check that
//! both parts are empty and the registration still happen under the senders' lock.
//!
//! A rendezvous keeps offers instead of a buffer: each sender queues its message with
//! a sequence number and its waiter, and waits until a receiver took it (the receiver
//! wakes exactly that sender) or withdraws it when its wait ends first. Closing the
//! channel withdraws every offer whose sender still waits, so every message is either
//! received exactly once or reported to its sender as not sent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use crossbeam_utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};

use crate::message::Message;
use crate::wait::{self, expired, WaitList, Waiter};

/// A message on its way through a channel; channels inside it are strong references.
pub type Msg = Message<Channel>;

/// Queue slots (32 bytes each) kept however empty the queue gets.
const SHRINK_ABOVE: usize = 4096;

/// The bytes of buffers a channel keeps for reuse, at most, and the largest buffer it
/// keeps. A sender that runs ahead of its receiver needs a buffer per queued message;
/// with only a few kept (32 before), every message past those was allocated by the
/// sender and freed by the receiver, in fresh memory that the allocator returned to
/// the system between bursts (page faults on one side, `free` on the other, which is
/// the slower side). A megabyte covers a burst of a thousand 1 KiB messages.
const SPARE_TOTAL: usize = 1 << 20;
const SPARE_BYTES: usize = 64 << 10;
/// How many of the most recently kept buffers a sender looks through for one that fits.
const SPARE_LOOKS: usize = 8;

/// Buffers kept for reuse, with their total capacity.
#[derive(Default)]
struct Spares {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// How long an operation may wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: succeed now or time out.
    Now,
    /// Until this deadline (`None`: as long as it takes).
    Until(Option<Instant>),
}

/// Why an operation did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failed {
    Timeout,
    Closed,
    /// The thread's interrupt request said to stop waiting.
    Interrupted,
}

/// What a receive found without waiting.
pub enum Polled {
    Message(Msg),
    /// Closed, and nothing left to drain.
    Closed,
    Empty,
}

struct Offer {
    seq: u64,
    msg: Msg,
    /// The sender waiting for this offer to be taken; `None` once nobody waits (a
    /// non-blocking send that found a waiting receiver): the message is then as good
    /// as queued.
    sender: Option<Arc<Waiter>>,
}

struct Inner {
    /// Buffered messages (for a rendezvous: only messages put back by `requeue`).
    queue: VecDeque<Msg>,
    /// Rendezvous offers, in increasing `seq`.
    offers: VecDeque<Offer>,
    next_seq: u64,
    /// The smallest sequence number that `close` withdrew (`u64::MAX`: none). Offers
    /// are taken from the front, so every offer taken before the close has a smaller
    /// number than every offer withdrawn by it.
    withdrawn_from: u64,
    closed: bool,
    receivers: WaitList,
    senders: WaitList,
    /// The receivers (senders) taken off their list and woken for a message (for
    /// room) that have not come back to the lock yet (see [`Inner::signal_receiver`]).
    receiver_signalled: Vec<Arc<Waiter>>,
    sender_signalled: Vec<Arc<Waiter>>,
}

impl Inner {
    /// The receiver to wake, when messages wait, receivers are registered, and fewer
    /// are on their way than there are messages and CPUs ([`wait::wake_limit`]). A
    /// receiver that comes back takes a message and, if more wait, wakes the next
    /// ([`Inner::receiver_back`], then this again). Waking one parked receiver per
    /// message sent, however many were on their way, woke them all for a burst that
    /// the first ones drained; the others found nothing and parked again, and with
    /// more threads than CPUs (8 producers and 8 consumers on 2 CPUs) those futile
    /// wake-ups took most of the time. No message is left waiting while a receiver
    /// is parked: whoever changes the queue or comes back to it calls this.
    /// `apart`: the messages on the receivers' side ([`Channel::head`]), which may
    /// have been taken since it was read: a count too high wakes a receiver in vain,
    /// never leaves one parked.
    fn signal_receiver(&mut self, apart: usize) -> Option<Arc<Waiter>> {
        if self.receivers.is_empty() {
            return None;
        }
        let waiting = self.queue.len() + self.offers.len() + apart;
        if self.receiver_signalled.len() >= waiting.min(wait::wake_limit()) {
            return None;
        }
        let w = self.receivers.pop()?;
        self.receiver_signalled.push(Arc::clone(&w));
        Some(w)
    }

    /// The same for senders of a bounded channel, with free places for messages.
    fn signal_sender(&mut self, capacity: Option<usize>) -> Option<Arc<Waiter>> {
        if self.senders.is_empty() {
            return None;
        }
        let room = capacity.map_or(0, |c| c.saturating_sub(self.queue.len()));
        if self.sender_signalled.len() >= room.min(wait::wake_limit()) {
            return None;
        }
        let w = self.senders.pop()?;
        self.sender_signalled.push(Arc::clone(&w));
        Some(w)
    }

    /// `w` is back at the lock: if it was a receiver on its way, it no longer is.
    fn receiver_back(&mut self, w: &Arc<Waiter>) {
        self.receiver_signalled.retain(|s| !Arc::ptr_eq(s, w));
    }

    fn sender_back(&mut self, w: &Arc<Waiter>) {
        self.sender_signalled.retain(|s| !Arc::ptr_eq(s, w));
    }
}

/// The layout keeps apart what different threads write: the lock with the queue it
/// guards (every send and receive), the buffers for reuse, and, in front of the
/// channel, the `Arc`'s counts (a receiver takes a reference for each delivery). On
/// one cache line, a receiver's count update and a sender's lock kept taking the
/// line from each other: a tenth of a producer-consumer stream went to that alone.
#[repr(C)]
pub struct Channel {
    /// First, and a cache line pair on its own: it aligns the channel, so the counts
    /// in front of it are on their own line.
    inner: CachePadded<Mutex<Inner>>,
    /// Messages there to take in `inner` (an unbounded channel's receivers' side
    /// counts apart, in `head`), and whether the channel is closed: copies of what
    /// `inner` says, stored under its lock, read without it by a thread that watches
    /// for a change for a moment before it registers and parks.
    ready: AtomicUsize,
    shut: AtomicBool,
    /// `None`: unbounded; `Some(0)`: rendezvous.
    capacity: Option<usize>,
    /// Set for a named channel: its key in [`NAMED`].
    name: Option<Box<[u8]>>,
    /// Buffers of delivered messages, for senders to reuse ([`Channel::spare`]).
    spares: CachePadded<SpareStore>,
    /// The receivers' side of an unbounded channel's queue (unused otherwise).
    head: CachePadded<Head>,
}

/// The older part of an unbounded channel's queue, under a lock of its own, so that
/// senders (who append to `Inner::queue`) and receivers (who take from here) do not
/// take the same lock for every message. A receiver that finds it empty takes the
/// channel's lock too and moves everything queued over in one swap. Both locks are
/// always taken in this order: `head`, then `inner`.
///
/// With one lock for both, a producer and a consumer on two CPUs spent most of a
/// stream of numbers waiting for that lock or moving its cache line between them.
struct Head {
    queue: Mutex<VecDeque<Msg>>,
    /// `queue`'s length, stored under its lock, read without it.
    len: AtomicUsize,
}

/// Both locks of a channel, in their order ([`Channel::lock`]).
struct Locked<'a> {
    /// `None` for a bounded channel or a rendezvous.
    head: Option<MutexGuard<'a, VecDeque<Msg>>>,
    inner: MutexGuard<'a, Inner>,
}

struct SpareStore {
    lock: Mutex<Spares>,
    /// `lock`'s `bytes`, read without the lock: stored under it.
    bytes: AtomicUsize,
}

/// Takes the front message of a queue. A queue that held many messages gives its
/// memory back as it drains (halving when a quarter is used: each message is moved
/// O(1) times).
fn pop_front(queue: &mut VecDeque<Msg>) -> Option<Msg> {
    let msg = queue.pop_front()?;
    let capacity = queue.capacity();
    if capacity > SHRINK_ABOVE && queue.len() < capacity / 4 {
        queue.shrink_to(capacity / 2);
    }
    Some(msg)
}

/// Wakes the waiters given (after the lock that chose them was released).
fn wake_each<const N: usize>(waiters: [Option<Arc<Waiter>>; N]) {
    for w in waiters.into_iter().flatten() {
        w.wake();
    }
}

/// Named channels, process wide (per copy of this library). Weak references: a named
/// channel lives while something else holds it, and its drop removes its entry.
/// (A B-tree: its allocations are pointed to from their start, so a leak checker at
/// exit calls them reachable, where a hash table's would be "possibly lost".)
static NAMED: Mutex<BTreeMap<Box<[u8]>, Weak<Channel>>> = Mutex::new(BTreeMap::new());

impl Channel {
    pub fn new(capacity: Option<usize>) -> Arc<Channel> {
        Arc::new(Self::make(capacity, None))
    }

    fn make(capacity: Option<usize>, name: Option<Box<[u8]>>) -> Channel {
        Channel {
            ready: AtomicUsize::new(0),
            shut: AtomicBool::new(false),
            spares: CachePadded::new(SpareStore {
                lock: Mutex::new(Spares::default()),
                bytes: AtomicUsize::new(0),
            }),
            inner: CachePadded::new(Mutex::new(Inner {
                queue: VecDeque::new(),
                offers: VecDeque::new(),
                next_seq: 0,
                withdrawn_from: u64::MAX,
                closed: false,
                receivers: WaitList::new(),
                senders: WaitList::new(),
                receiver_signalled: Vec::new(),
                sender_signalled: Vec::new(),
            })),
            capacity,
            name,
            head: CachePadded::new(Head {
                queue: Mutex::new(VecDeque::new()),
                len: AtomicUsize::new(0),
            }),
        }
    }

    /// The process-wide channel called `name`, made with `capacity` if there is none.
    /// Fails with the existing channel's capacity when that differs.
    pub fn named(name: &[u8], capacity: Option<usize>) -> Result<Arc<Channel>, Option<usize>> {
        let mut map = NAMED.lock();
        if let Some(existing) = map.get(name).and_then(Weak::upgrade) {
            return if existing.capacity == capacity {
                Ok(existing)
            } else {
                Err(existing.capacity)
            };
        }
        let channel = Arc::new(Self::make(capacity, Some(Box::from(name))));
        map.insert(Box::from(name), Arc::downgrade(&channel));
        Ok(channel)
    }

    pub fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// A buffer for a message of about `len` bytes (0: unknown): one handed back by
    /// a receiver when there is one that fits, else a new one.
    pub fn spare(&self, len: usize) -> Vec<u8> {
        // Never waits for the lock: a new buffer costs less than waiting.
        if self.spares.bytes.load(Ordering::Relaxed) > 0 {
            let Some(mut spares) = self.spares.lock.try_lock() else {
                return Vec::with_capacity(len.max(64));
            };
            // Big enough, and not so big that a small message pins a large block.
            let fits = |b: &Vec<u8>| b.capacity() >= len && b.capacity() <= 4 * len + 256;
            let n = spares.buffers.len();
            let from = n.saturating_sub(SPARE_LOOKS);
            if let Some(pos) = spares.buffers[from..].iter().rposition(fits) {
                let buf = spares.buffers.swap_remove(from + pos);
                spares.bytes -= buf.capacity();
                self.spares.bytes.store(spares.bytes, Ordering::Relaxed);
                return buf;
            }
        }
        Vec::with_capacity(len.max(64))
    }

    /// Takes back the buffer of a message that was delivered, for a later send.
    pub fn recycle(&self, msg: Msg) {
        if self.spares.bytes.load(Ordering::Relaxed) >= SPARE_TOTAL {
            return;
        }
        let Some(buf) = msg.into_buffer() else {
            return;
        };
        if buf.capacity() > SPARE_BYTES {
            return;
        }
        let Some(mut spares) = self.spares.lock.try_lock() else {
            return;
        };
        if spares.bytes + buf.capacity() <= SPARE_TOTAL {
            spares.bytes += buf.capacity();
            spares.buffers.push(buf);
            self.spares.bytes.store(spares.bytes, Ordering::Relaxed);
        }
    }

    fn rendezvous(&self) -> bool {
        self.capacity == Some(0)
    }

    /// Messages queued: buffered ones, and rendezvous messages whose sender no longer
    /// waits (offers still waiting for a receiver are their senders', not queued).
    pub fn len(&self) -> usize {
        let l = self.lock();
        let apart = l.head.as_ref().map_or(0, |h| h.len());
        apart + l.inner.queue.len() + l.inner.offers.iter().filter(|o| o.sender.is_none()).count()
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Closes the channel: later sends fail, receivers drain what is queued, and
    /// rendezvous offers whose senders still wait are withdrawn (their sends fail).
    pub fn close(&self) {
        let mut withdrawn = Vec::new();
        let mut inner = self.inner.lock();
        if inner.closed {
            return;
        }
        inner.closed = true;
        self.shut.store(true, Ordering::Release);
        let mut wake = inner.receivers.take_all();
        wake.extend(inner.senders.take_all());
        inner.receiver_signalled.clear();
        inner.sender_signalled.clear();
        if !inner.offers.is_empty() {
            let offers = std::mem::take(&mut inner.offers);
            for offer in offers {
                match offer.sender {
                    Some(sender) => {
                        inner.withdrawn_from = inner.withdrawn_from.min(offer.seq);
                        wake.push_back(sender);
                        withdrawn.push(offer.msg);
                    }
                    None => inner.offers.push_back(offer),
                }
            }
            self.publish(&inner);
        }
        drop(inner);
        wait::wake_all(wake);
        drop(withdrawn);
    }

    /// Both locks, in their order: the receivers' side of an unbounded channel's
    /// queue, then the channel's.
    fn lock(&self) -> Locked<'_> {
        let head = self.capacity.is_none().then(|| self.head.queue.lock());
        Locked {
            head,
            inner: self.inner.lock(),
        }
    }

    /// Messages on the receivers' side, read without its lock.
    fn apart(&self) -> usize {
        self.head.len.load(Ordering::Acquire)
    }

    /// Takes the front message of the receivers' side (under its lock).
    fn take_apart(&self, head: &mut VecDeque<Msg>) -> Option<Msg> {
        let msg = pop_front(head)?;
        self.head.len.store(head.len(), Ordering::Release);
        Some(msg)
    }

    /// Takes the next message, if any, with the waiter to wake for it: a sender now
    /// that there is room (unless one is on its way already), or the rendezvous
    /// sender whose offer it was. `head`: the receivers' side of an unbounded
    /// channel, locked.
    fn take(
        &self,
        inner: &mut Inner,
        head: Option<&mut VecDeque<Msg>>,
    ) -> Option<(Msg, Option<Arc<Waiter>>)> {
        if let Some(head) = head {
            if head.is_empty() && !inner.queue.is_empty() {
                // Everything the senders queued moves over at once.
                std::mem::swap(head, &mut inner.queue);
                self.publish(inner);
            }
            return self.take_apart(head).map(|msg| (msg, None));
        }
        if let Some(msg) = pop_front(&mut inner.queue) {
            self.publish(inner);
            let wake = inner.signal_sender(self.capacity);
            return Some((msg, wake));
        }
        let offer = inner.offers.pop_front()?;
        self.publish(inner);
        Some((offer.msg, offer.sender))
    }

    /// Updates `ready` after the queue changed (under the lock).
    fn publish(&self, inner: &Inner) {
        self.ready
            .store(inner.queue.len() + inner.offers.len(), Ordering::Release);
    }

    /// Watches, for a moment and without the lock, for a message or the close.
    fn spin_for_message(&self, deadline: Option<Instant>) -> bool {
        wait::spin_until(deadline, || {
            self.ready.load(Ordering::Acquire) > 0
                || self.apart() > 0
                || self.shut.load(Ordering::Acquire)
        })
    }

    /// Watches, for a moment and without the lock, for room or the close.
    fn spin_for_room(&self, capacity: usize, deadline: Option<Instant>) -> bool {
        wait::spin_until(deadline, || {
            self.ready.load(Ordering::Acquire) < capacity || self.shut.load(Ordering::Acquire)
        })
    }

    /// Takes a message for the receiver `w` (`None`: one not registered anywhere),
    /// with the waiters to wake once the lock is released: a sender for the room
    /// made, and the next receiver when more messages wait. `w` leaves the
    /// receivers when it got one.
    fn take_for(
        &self,
        l: &mut Locked<'_>,
        w: Option<&Arc<Waiter>>,
    ) -> Option<(Msg, [Option<Arc<Waiter>>; 2])> {
        let inner = &mut *l.inner;
        if let Some(w) = w {
            inner.receiver_back(w);
        }
        let (msg, sender) = self.take(inner, l.head.as_deref_mut())?;
        if let Some(w) = w {
            inner.receivers.remove(w);
        }
        Some((msg, [sender, inner.signal_receiver(self.apart())]))
    }

    /// Takes a message if there is one. Otherwise, with `register`, adds that waiter
    /// to the receivers, to be woken when a message comes or the channel closes.
    pub fn poll_receive(&self, register: Option<&Arc<Waiter>>) -> Polled {
        let mut l = self.lock();
        if let Some((msg, wake)) = self.take_for(&mut l, register) {
            drop(l);
            wake_each(wake);
            return Polled::Message(msg);
        }
        if l.inner.closed {
            return Polled::Closed;
        }
        if let Some(w) = register {
            l.inner.receivers.register(w);
        }
        Polled::Empty
    }

    /// Takes `w` off the receivers. If it had been woken for a message that is
    /// still there, the next receiver is woken instead.
    pub fn leave_receivers(&self, w: &Arc<Waiter>) {
        let mut inner = self.inner.lock();
        let next = self.pass_on_receive(&mut inner, w);
        drop(inner);
        if let Some(next) = next {
            next.wake();
        }
    }

    fn pass_on_receive(&self, inner: &mut Inner, w: &Arc<Waiter>) -> Option<Arc<Waiter>> {
        inner.receiver_back(w);
        inner.receivers.remove(w);
        inner.signal_receiver(self.apart())
    }

    /// Receives a message, waiting as `wait` says. `interrupted` is asked before each
    /// park (under the channel's lock, so its answer and the channel's state agree).
    pub fn receive(
        &self,
        wait: Wait,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<Msg, Failed> {
        let mut l = if self.capacity.is_none() {
            let mut head = self.head.queue.lock();
            // The common case of a stream: no other lock to take.
            if let Some(msg) = self.take_apart(&mut head) {
                return Ok(msg);
            }
            Locked {
                head: Some(head),
                inner: self.inner.lock(),
            }
        } else {
            self.lock()
        };
        if let Some((msg, wake)) = self.take_for(&mut l, None) {
            drop(l);
            wake_each(wake);
            return Ok(msg);
        }
        if l.inner.closed {
            return Err(Failed::Closed);
        }
        drop(l);
        let Wait::Until(deadline) = wait else {
            return Err(Failed::Timeout);
        };
        if self.spin_for_message(deadline) {
            match self.poll_receive(None) {
                Polled::Message(msg) => return Ok(msg),
                Polled::Closed => return Err(Failed::Closed),
                Polled::Empty => {}
            }
        }
        let w = wait::current();
        loop {
            let mut l = self.lock();
            if let Some((msg, wake)) = self.take_for(&mut l, Some(&w)) {
                drop(l);
                wake_each(wake);
                return Ok(msg);
            }
            let inner = &mut *l.inner;
            if inner.closed {
                inner.receiver_back(&w);
                inner.receivers.remove(&w);
                return Err(Failed::Closed);
            }
            let failed = if interrupted() {
                Some(Failed::Interrupted)
            } else if expired(deadline) {
                Some(Failed::Timeout)
            } else {
                None
            };
            if let Some(failed) = failed {
                let next = self.pass_on_receive(inner, &w);
                drop(l);
                if let Some(next) = next {
                    next.wake();
                }
                return Err(failed);
            }
            // Nothing here for `w` (it is back, if it had been woken for a message
            // that another receiver took first): it waits again.
            inner.receiver_back(&w);
            inner.receivers.register(&w);
            drop(l);
            w.park(deadline);
        }
    }

    /// Puts back a message that a receiver took but could not deliver (its state ran
    /// out of memory), at the front: it is received next.
    pub fn requeue(&self, msg: Msg) {
        let mut l = self.lock();
        match l.head.as_deref_mut() {
            Some(head) => {
                head.push_front(msg);
                self.head.len.store(head.len(), Ordering::Release);
            }
            None => l.inner.queue.push_front(msg),
        }
        self.publish(&l.inner);
        let next = l.inner.signal_receiver(self.apart());
        drop(l);
        if let Some(next) = next {
            next.wake();
        }
    }

    /// Sends `msg`, waiting as `wait` says while a bounded channel is full (for a
    /// rendezvous: until a receiver took it). On failure the message is dropped.
    pub fn send(
        &self,
        msg: Msg,
        wait: Wait,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<(), Failed> {
        if self.rendezvous() {
            return self.hand_over(msg, wait, interrupted);
        }
        let mut msg = Some(msg);
        let mut w: Option<Arc<Waiter>> = None;
        let mut spun = false;
        loop {
            let mut inner = self.inner.lock();
            if let Some(w) = &w {
                inner.sender_back(w);
            }
            if inner.closed {
                if let Some(w) = &w {
                    inner.senders.remove(w);
                }
                drop(inner);
                return Err(Failed::Closed);
            }
            if self.capacity.is_none_or(|c| inner.queue.len() < c) {
                if let Some(msg) = msg.take() {
                    inner.queue.push_back(msg);
                }
                self.publish(&inner);
                if let Some(w) = &w {
                    inner.senders.remove(w);
                }
                // The room left, if any, goes to the next sender.
                let wake = [
                    inner.signal_receiver(self.apart()),
                    inner.signal_sender(self.capacity),
                ];
                drop(inner);
                wake_each(wake);
                return Ok(());
            }
            let Wait::Until(deadline) = wait else {
                drop(inner);
                return Err(Failed::Timeout);
            };
            if !spun {
                spun = true;
                drop(inner);
                if let Some(capacity) = self.capacity {
                    self.spin_for_room(capacity, deadline);
                }
                continue;
            }
            let failed = if interrupted() {
                Some(Failed::Interrupted)
            } else if expired(deadline) {
                Some(Failed::Timeout)
            } else {
                None
            };
            let w = w.get_or_insert_with(wait::current);
            if let Some(failed) = failed {
                // Room made for this sender goes to the next one.
                inner.senders.remove(w);
                let next = inner.signal_sender(self.capacity);
                drop(inner);
                if let Some(next) = next {
                    next.wake();
                }
                return Err(failed);
            }
            inner.senders.register(w);
            drop(inner);
            w.park(deadline);
        }
    }

    /// A rendezvous send.
    fn hand_over(
        &self,
        msg: Msg,
        wait: Wait,
        interrupted: &mut dyn FnMut() -> bool,
    ) -> Result<(), Failed> {
        let mut inner = self.inner.lock();
        if inner.closed {
            drop(inner);
            return Err(Failed::Closed);
        }
        let Wait::Until(deadline) = wait else {
            // Only into the hands of a receiver that waits now.
            let Some(receiver) = inner.receivers.pop() else {
                drop(inner);
                return Err(Failed::Timeout);
            };
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.offers.push_back(Offer {
                seq,
                msg,
                sender: None,
            });
            self.publish(&inner);
            drop(inner);
            receiver.wake();
            return Ok(());
        };
        let w = wait::current();
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.offers.push_back(Offer {
            seq,
            msg,
            sender: Some(Arc::clone(&w)),
        });
        self.publish(&inner);
        let receiver = inner.receivers.pop();
        drop(inner);
        if let Some(receiver) = receiver {
            receiver.wake();
        }
        let mut spun = false;
        loop {
            let mut inner = self.inner.lock();
            let Ok(pos) = inner.offers.binary_search_by_key(&seq, |o| o.seq) else {
                let withdrawn = inner.closed && seq >= inner.withdrawn_from;
                drop(inner);
                return if withdrawn {
                    Err(Failed::Closed)
                } else {
                    Ok(())
                };
            };
            let failed = if interrupted() {
                Some(Failed::Interrupted)
            } else if expired(deadline) {
                Some(Failed::Timeout)
            } else {
                None
            };
            if let Some(failed) = failed {
                let withdrawn = inner.offers.remove(pos);
                self.publish(&inner);
                drop(inner);
                drop(withdrawn);
                return Err(failed);
            }
            drop(inner);
            if !spun {
                spun = true;
                if w.spin(deadline) {
                    continue;
                }
            }
            w.park(deadline);
        }
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        let Some(name) = &self.name else {
            return;
        };
        let mut map = NAMED.lock();
        // A channel made under the same name after this one's last reference went
        // keeps its entry.
        if map
            .get(name)
            .is_some_and(|w| std::ptr::eq(w.as_ptr(), self))
        {
            map.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::View;
    use std::time::Duration;

    fn int(m: &Msg) -> i64 {
        match m.view() {
            View::Int(i) => i,
            _ => panic!("not an integer message"),
        }
    }

    fn never() -> impl FnMut() -> bool {
        || false
    }

    const FOREVER: Wait = Wait::Until(None);

    fn within(ms: u64) -> Wait {
        Wait::Until(Some(Instant::now() + Duration::from_millis(ms)))
    }

    #[test]
    fn messages_come_out_in_order() {
        let ch = Channel::new(None);
        for i in 0..10 {
            ch.send(Msg::integer(i), Wait::Now, &mut never()).unwrap();
        }
        assert_eq!(ch.len(), 10);
        for i in 0..10 {
            assert_eq!(int(&ch.receive(Wait::Now, &mut never()).unwrap()), i);
        }
        assert_eq!(
            ch.receive(Wait::Now, &mut never()).err(),
            Some(Failed::Timeout)
        );
    }

    #[test]
    fn a_full_bounded_channel_times_out_and_keeps_its_messages() {
        let ch = Channel::new(Some(2));
        ch.send(Msg::integer(1), Wait::Now, &mut never()).unwrap();
        ch.send(Msg::integer(2), Wait::Now, &mut never()).unwrap();
        assert_eq!(
            ch.send(Msg::integer(3), Wait::Now, &mut never()).err(),
            Some(Failed::Timeout)
        );
        let t0 = Instant::now();
        assert_eq!(
            ch.send(Msg::integer(3), within(20), &mut never()).err(),
            Some(Failed::Timeout)
        );
        assert!(t0.elapsed() >= Duration::from_millis(20));
        assert_eq!(ch.len(), 2);
    }

    #[test]
    fn close_lets_receivers_drain_then_says_closed() {
        let ch = Channel::new(None);
        ch.send(Msg::integer(1), Wait::Now, &mut never()).unwrap();
        ch.close();
        assert_eq!(
            ch.send(Msg::integer(2), Wait::Now, &mut never()).err(),
            Some(Failed::Closed)
        );
        assert_eq!(int(&ch.receive(FOREVER, &mut never()).unwrap()), 1);
        assert_eq!(
            ch.receive(FOREVER, &mut never()).err(),
            Some(Failed::Closed)
        );
    }

    #[test]
    fn a_rendezvous_send_returns_once_taken() {
        let ch = Channel::new(Some(0));
        // Nobody waits: a non-blocking send fails and leaves nothing behind.
        assert_eq!(
            ch.send(Msg::integer(0), Wait::Now, &mut never()).err(),
            Some(Failed::Timeout)
        );
        assert_eq!(ch.len(), 0);
        let ch2 = Arc::clone(&ch);
        let receiver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            int(&ch2.receive(FOREVER, &mut never()).unwrap())
        });
        ch.send(Msg::integer(7), FOREVER, &mut never()).unwrap();
        assert_eq!(receiver.join().unwrap(), 7);
    }

    #[test]
    fn close_withdraws_a_waiting_rendezvous_offer() {
        let ch = Channel::new(Some(0));
        let ch2 = Arc::clone(&ch);
        let sender = std::thread::spawn(move || ch2.send(Msg::integer(1), FOREVER, &mut || false));
        std::thread::sleep(Duration::from_millis(20));
        ch.close();
        assert_eq!(sender.join().unwrap().err(), Some(Failed::Closed));
        assert_eq!(
            ch.receive(Wait::Now, &mut never()).err(),
            Some(Failed::Closed)
        );
    }

    #[test]
    fn an_interrupted_wait_leaves_at_once() {
        let ch = Channel::new(None);
        let mut asked = 0;
        let r = ch.receive(FOREVER, &mut || {
            asked += 1;
            true
        });
        assert_eq!(r.err(), Some(Failed::Interrupted));
        assert_eq!(asked, 1);
    }

    /// `producers` threads send `per` numbers each (producer `p` sends `p * per + i`,
    /// pausing a moment every `pause_every` messages when given), `consumers` threads
    /// receive until the channel, closed once every producer is done, says so. What
    /// each consumer got, in the order it got it.
    fn exchange(
        ch: &Arc<Channel>,
        producers: i64,
        consumers: usize,
        per: i64,
        pause_every: Option<i64>,
    ) -> Vec<Vec<i64>> {
        let producers: Vec<_> = (0..producers)
            .map(|p| {
                let ch = Arc::clone(ch);
                std::thread::spawn(move || {
                    for i in 0..per {
                        ch.send(Msg::integer(p * per + i), FOREVER, &mut || false)
                            .unwrap();
                        if pause_every.is_some_and(|n| i % n == 0) {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..consumers)
            .map(|_| {
                let ch = Arc::clone(ch);
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    while let Ok(m) = ch.receive(FOREVER, &mut || false) {
                        got.push(int(&m));
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        ch.close();
        consumers.into_iter().map(|c| c.join().unwrap()).collect()
    }

    #[test]
    fn eight_producers_and_eight_consumers_get_every_message_once() {
        let ch = Channel::new(Some(4));
        let per = 2000;
        let mut all: Vec<i64> = exchange(&ch, 8, 8, per, None)
            .into_iter()
            .flatten()
            .collect();
        all.sort();
        assert_eq!(all, (0..8 * per).collect::<Vec<_>>());
    }

    /// The receivers' side of an unbounded channel: every message once, in order per
    /// sender, while receivers swap batches over, register, park and are woken.
    #[test]
    fn unbounded_many_to_many_keeps_each_senders_order() {
        let ch = Channel::new(None);
        let per: i64 = 5000;
        let got = exchange(&ch, 4, 4, per, Some(512));
        for seen in &got {
            for p in 0..4 {
                let mine: Vec<i64> = seen.iter().copied().filter(|v| v / per == p).collect();
                assert!(mine.windows(2).all(|w| w[0] < w[1]), "out of order");
            }
        }
        let mut all: Vec<i64> = got.into_iter().flatten().collect();
        all.sort();
        assert_eq!(all, (0..4 * per).collect::<Vec<_>>());
        assert_eq!(ch.len(), 0);
    }

    /// A receiver that swapped a batch over and took one message leaves the rest
    /// where a parked receiver is woken for them, and `len` and a put-back message
    /// count that part too.
    #[test]
    fn a_swapped_batch_wakes_a_parked_receiver_and_counts_in_len() {
        let ch = Channel::new(None);
        for i in 0..3 {
            ch.send(Msg::integer(i), Wait::Now, &mut never()).unwrap();
        }
        assert_eq!(int(&ch.receive(Wait::Now, &mut never()).unwrap()), 0);
        assert_eq!(ch.len(), 2);
        let back = ch.receive(Wait::Now, &mut never()).unwrap();
        ch.requeue(back);
        assert_eq!(ch.len(), 2);
        // A receiver registered while both parts were empty is woken by a send.
        assert_eq!(int(&ch.receive(Wait::Now, &mut never()).unwrap()), 1);
        assert_eq!(int(&ch.receive(Wait::Now, &mut never()).unwrap()), 2);
        let waiter = {
            let ch = Arc::clone(&ch);
            std::thread::spawn(move || int(&ch.receive(FOREVER, &mut never()).unwrap()))
        };
        std::thread::sleep(Duration::from_millis(20));
        ch.send(Msg::integer(7), Wait::Now, &mut never()).unwrap();
        assert_eq!(waiter.join().unwrap(), 7);
    }

    /// Waiters registered with `register`, and how many of them were woken.
    fn parked(n: usize, register: impl Fn(&Arc<Waiter>)) -> Vec<Arc<Waiter>> {
        (0..n)
            .map(|_| {
                let w = Arc::new(Waiter::new());
                register(&w);
                w
            })
            .collect()
    }

    fn woken(waiters: &[Arc<Waiter>]) -> Vec<&Arc<Waiter>> {
        // A park that ends at once tells (and takes) a pending wake-up.
        waiters
            .iter()
            .filter(|w| w.park(Some(Instant::now())))
            .collect()
    }

    #[test]
    fn regression_a_burst_woke_every_parked_receiver() {
        // Waking one parked receiver per message woke them all for a burst that the
        // first ones drained; now no more are on their way than there are CPUs, and
        // each one that comes back with a message wakes the next.
        let limit = wait::wake_limit();
        let n = limit + 3;
        let ch = Channel::new(None);
        let receivers = parked(n, |w| {
            assert!(matches!(ch.poll_receive(Some(w)), Polled::Empty));
        });
        for i in 0..n as i64 {
            ch.send(Msg::integer(i), Wait::Now, &mut never()).unwrap();
        }
        let first = woken(&receivers);
        assert_eq!(first.len(), limit);
        // The woken ones come back (as `receive` and `select` do) and take a
        // message each; every message is taken, every receiver gets one.
        let mut got = Vec::new();
        let mut pending: Vec<&Arc<Waiter>> = first;
        while let Some(w) = pending.pop() {
            match ch.poll_receive(Some(w)) {
                Polled::Message(m) => got.push(int(&m)),
                _ => panic!("a receiver was woken for nothing"),
            }
            pending.extend(woken(&receivers));
        }
        got.sort();
        assert_eq!(got, (0..n as i64).collect::<Vec<_>>());
    }

    #[test]
    fn regression_room_woke_every_parked_sender() {
        let limit = wait::wake_limit();
        let n = limit + 3;
        let ch = Channel::new(Some(n));
        for i in 0..n as i64 {
            ch.send(Msg::integer(i), Wait::Now, &mut never()).unwrap();
        }
        let senders = parked(n, |w| ch.inner.lock().senders.register(w));
        for _ in 0..n {
            ch.receive(Wait::Now, &mut never()).unwrap();
        }
        assert_eq!(woken(&senders).len(), limit);
    }

    #[test]
    fn a_named_channel_is_shared_and_goes_with_its_last_holder() {
        let a = Channel::named(b"unit-test", Some(3)).unwrap();
        let b = Channel::named(b"unit-test", Some(3)).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(Channel::named(b"unit-test", None).err(), Some(Some(3)));
        drop((a, b));
        let c = Channel::named(b"unit-test", None).unwrap();
        assert_eq!(c.capacity(), None);
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    #[test]
    #[ignore]
    fn throughput_one_producer_one_consumer() {
        for _ in 0..5 {
            let ch = Channel::new(None);
            let n = 1_000_000;
            let c2 = Arc::clone(&ch);
            let t0 = Instant::now();
            let consumer = std::thread::spawn(move || {
                for _ in 0..n {
                    c2.receive(Wait::Until(None), &mut || false).unwrap();
                }
            });
            for i in 0..n {
                ch.send(Msg::integer(i), Wait::Until(None), &mut || false)
                    .unwrap();
            }
            consumer.join().unwrap();
            eprintln!("{:?} per message", t0.elapsed() / n as u32);
        }
    }

    #[test]
    #[ignore]
    fn throughput_of_strings() {
        let payload = vec![b'x'; 1024];
        for _ in 0..5 {
            let ch = Channel::new(None);
            let n = 100_000;
            let c2 = Arc::clone(&ch);
            let t0 = Instant::now();
            let consumer = std::thread::spawn(move || {
                for _ in 0..n {
                    let m = c2.receive(Wait::Until(None), &mut || false).unwrap();
                    c2.recycle(m);
                }
            });
            for _ in 0..n {
                let buf = ch.spare(payload.len());
                ch.send(Msg::string(&payload, buf), Wait::Until(None), &mut || false)
                    .unwrap();
            }
            consumer.join().unwrap();
            eprintln!("{:?} per string message", t0.elapsed() / n as u32);
        }
    }
}
