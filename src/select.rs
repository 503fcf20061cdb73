//! Waiting for the first of several events: a message (or the close) of any of a list
//! of channels, the end of any of a list of threads.
//!
//! The list is scanned in order; the first source that is ready fires (a message is
//! taken under its channel's lock, so two selecting threads never get the same one).
//! When none is, the thread's waiter is registered with every source and the scan
//! repeats each time it is woken; on the way out it leaves every list it joined,
//! passing on a wake-up that was meant for it but not used. Each round costs one
//! lock per source: linear in the list, no polling.

use std::sync::Arc;

use crate::channel::{Channel, Msg, Polled, Wait};
use crate::record::Record;
use crate::wait::{self, expired, Waiter};

pub enum Source {
    Channel(Arc<Channel>),
    /// A thread's end (its record).
    Thread(Arc<Record>),
}

/// What fired, by position in the list.
pub enum Fired {
    Message(usize, Msg),
    /// The channel is closed and drained.
    Closed(usize),
    /// The thread's chunk has finished: `join` will not block.
    Ended(usize),
    Timeout,
    Interrupted,
}

impl Fired {
    fn index(&self) -> Option<usize> {
        match self {
            Fired::Message(i, _) | Fired::Closed(i) | Fired::Ended(i) => Some(*i),
            Fired::Timeout | Fired::Interrupted => None,
        }
    }
}

/// The first ready source, registering `w` with each one found not ready.
fn scan(sources: &[Source], w: Option<&Arc<Waiter>>) -> Option<Fired> {
    for (i, source) in sources.iter().enumerate() {
        match source {
            Source::Channel(ch) => match ch.poll_receive(w) {
                Polled::Message(msg) => return Some(Fired::Message(i, msg)),
                Polled::Closed => return Some(Fired::Closed(i)),
                Polled::Empty => {}
            },
            Source::Thread(record) => {
                if record.poll_end(w) {
                    return Some(Fired::Ended(i));
                }
            }
        }
    }
    None
}

/// Waits as `wait` says for the first of `sources`. `interrupted` is asked before
/// each park.
pub fn select(sources: &[Source], wait: Wait, interrupted: &mut dyn FnMut() -> bool) -> Fired {
    if let Some(fired) = scan(sources, None) {
        return fired;
    }
    let Wait::Until(deadline) = wait else {
        return Fired::Timeout;
    };
    let w = wait::current();
    let mut spun = false;
    let fired = loop {
        if let Some(fired) = scan(sources, Some(&w)) {
            break fired;
        }
        if interrupted() {
            break Fired::Interrupted;
        }
        if expired(deadline) {
            break Fired::Timeout;
        }
        if !spun {
            spun = true;
            if w.spin(deadline) {
                continue;
            }
        }
        w.park(deadline);
    };
    // The source that fired took `w` off its list itself.
    let skip = fired.index();
    for (i, source) in sources.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        match source {
            Source::Channel(ch) => ch.leave_receivers(&w),
            Source::Thread(record) => record.leave_end(&w),
        }
    }
    fired
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::View;
    use std::time::{Duration, Instant};

    fn never() -> impl FnMut() -> bool {
        || false
    }

    #[test]
    fn the_first_ready_channel_in_list_order_fires() {
        let (a, b) = (Channel::new(None), Channel::new(None));
        b.send(Msg::integer(2), Wait::Now, &mut never()).unwrap();
        a.send(Msg::integer(1), Wait::Now, &mut never()).unwrap();
        let sources = [
            Source::Channel(Arc::clone(&b)),
            Source::Channel(Arc::clone(&a)),
        ];
        match select(&sources, Wait::Now, &mut never()) {
            Fired::Message(0, m) => assert!(matches!(m.view(), View::Int(2))),
            _ => panic!("b should fire first"),
        }
    }

    #[test]
    fn a_message_sent_later_wakes_the_selector() {
        let (a, b) = (Channel::new(None), Channel::new(Some(0)));
        let b2 = Arc::clone(&b);
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b2.send(Msg::integer(5), Wait::Until(None), &mut || false)
        });
        let sources = [Source::Channel(a), Source::Channel(b)];
        let deadline = Some(Instant::now() + Duration::from_secs(10));
        match select(&sources, Wait::Until(deadline), &mut never()) {
            Fired::Message(1, m) => assert!(matches!(m.view(), View::Int(5))),
            _ => panic!("the rendezvous message should fire"),
        }
        sender.join().unwrap().unwrap();
    }

    #[test]
    fn two_selectors_never_get_the_same_message() {
        let ch = Channel::new(None);
        let n = 2000;
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let ch = Arc::clone(&ch);
                std::thread::spawn(move || {
                    let sources = [Source::Channel(ch)];
                    let mut got = Vec::new();
                    loop {
                        match select(&sources, Wait::Until(None), &mut || false) {
                            Fired::Message(_, m) => match m.view() {
                                View::Int(i) => got.push(i),
                                _ => unreachable!(),
                            },
                            Fired::Closed(_) => return got,
                            _ => unreachable!(),
                        }
                    }
                })
            })
            .collect();
        for i in 0..n {
            ch.send(Msg::integer(i), Wait::Now, &mut never()).unwrap();
        }
        ch.close();
        let mut all: Vec<i64> = takers.into_iter().flat_map(|t| t.join().unwrap()).collect();
        all.sort();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn an_empty_wait_times_out() {
        let sources = [Source::Channel(Channel::new(None))];
        let t0 = Instant::now();
        let deadline = Some(t0 + Duration::from_millis(20));
        assert!(matches!(
            select(&sources, Wait::Until(deadline), &mut never()),
            Fired::Timeout
        ));
        assert!(t0.elapsed() >= Duration::from_millis(20));
    }
}
