//! A work queue shared fairly among those who submit to it, for a pool of worker threads.
//!
//! Work is queued per submitter (a producer, for the CDA2 validators). Workers take from the
//! submitters in turn, one item each; a submitter that had nothing queued goes first. Items
//! marked heavy (large documents, the costly ones) are held to `share` workers per submitter,
//! so a producer that sends a thousand of them waits behind itself while another producer's
//! document goes to a worker at once; light items use every free worker (a single producer's
//! ordinary documents are validated at full speed).

use parking_lot::{Condvar, Mutex};
use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
struct State<T> {
    queued: HashMap<String, VecDeque<(T, bool)>>,
    /// Submitters with queued work, in the order they are served.
    turn: VecDeque<String>,
    running: HashMap<String, usize>,
    closed: bool,
}

#[derive(Debug)]
pub struct FairQueue<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
    share: usize,
}

/// A taken item's claim on its submitter's share; the share is given back when it is dropped.
#[derive(Debug)]
pub struct Taken<'q, T> {
    queue: &'q FairQueue<T>,
    key: String,
}

impl<T> Drop for Taken<'_, T> {
    fn drop(&mut self) {
        let mut s = self.queue.state.lock();
        if let Some(n) = s.running.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.running.remove(&self.key);
            }
        }
        drop(s);
        self.queue.changed.notify_all();
    }
}

impl<T> FairQueue<T> {
    /// A queue where one submitter holds at most `share` workers at once (at least one).
    pub fn new(share: usize) -> Self {
        Self {
            state: Mutex::new(State { queued: HashMap::new(), turn: VecDeque::new(), running: HashMap::new(), closed: false }),
            changed: Condvar::new(),
            share: share.max(1),
        }
    }

    /// Queues `item` for `key` (`heavy`: held to the submitter's share of workers); false when
    /// the queue is closed (the item is dropped).
    pub fn push(&self, key: &str, item: T, heavy: bool) -> bool {
        let mut s = self.state.lock();
        if s.closed {
            return false;
        }
        let q = s.queued.entry(key.to_string()).or_default();
        q.push_back((item, heavy));
        if q.len() == 1 {
            // a submitter with nothing queued goes before those that were just served
            if s.running.contains_key(key) {
                s.turn.push_back(key.to_string());
            } else {
                s.turn.push_front(key.to_string());
            }
        }
        drop(s);
        self.changed.notify_one();
        true
    }

    /// Waits for the next item whose submitter is under its share, in turn; `None` once the
    /// queue is closed.
    pub fn take(&self) -> Option<(Taken<'_, T>, T)> {
        let mut s = self.state.lock();
        loop {
            if s.closed {
                return None;
            }
            let share = self.share;
            let eligible = s.turn.iter().position(|k| {
                let heavy = s.queued.get(k).and_then(VecDeque::front).is_some_and(|(_, h)| *h);
                !heavy || s.running.get(k).copied().unwrap_or(0) < share
            });
            if let Some(at) = eligible {
                let key = s.turn.remove(at).unwrap_or_default();
                let item = s.queued.get_mut(&key).and_then(VecDeque::pop_front);
                if s.queued.get(&key).is_some_and(|q| !q.is_empty()) {
                    s.turn.push_back(key.clone());
                } else {
                    s.queued.remove(&key);
                }
                if let Some((item, _)) = item {
                    *s.running.entry(key.clone()).or_default() += 1;
                    return Some((Taken { queue: self, key }, item));
                }
                continue;
            }
            self.changed.wait(&mut s);
        }
    }

    /// Stops the workers: queued items are dropped, `take` answers `None`.
    pub fn close(&self) {
        let mut s = self.state.lock();
        s.closed = true;
        s.queued.clear();
        s.turn.clear();
        drop(s);
        self.changed.notify_all();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn submitters_are_served_in_turn_and_within_their_share() {
        let q = Arc::new(FairQueue::new(1));
        for i in 0..5 {
            q.push("flood", i, true);
        }
        q.push("other", 100, true);
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = |q: Arc<FairQueue<i32>>, tx: std::sync::mpsc::Sender<i32>, release: std::sync::mpsc::Receiver<()>| {
            std::thread::spawn(move || {
                while let Some((taken, v)) = q.take() {
                    tx.send(v).unwrap();
                    let _ = release.recv();
                    drop(taken);
                }
            })
        };
        let (release1, r1) = std::sync::mpsc::channel();
        let (release2, r2) = std::sync::mpsc::channel();
        let w1 = worker(Arc::clone(&q), tx.clone(), r1);
        let first = rx.recv().unwrap();
        let w2 = worker(Arc::clone(&q), tx, r2);
        let second = rx.recv().unwrap();
        // the other producer's document is taken at once (it had nothing queued: it goes
        // first), and the flood's first on the other worker
        assert_eq!((first, second), (100, 0));
        // the other producer is done; the flood holds its one worker: the free worker waits
        // instead of taking a second of its heavy items
        release1.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "a second worker went to the producer already holding its share");
        release2.send(()).unwrap();
        assert_eq!(rx.recv().unwrap(), 1);
        q.close();
        drop((release1, release2));
        w1.join().unwrap();
        w2.join().unwrap();
        assert!(q.take().is_none());
        assert!(!q.push("late", 7, false));
    }

    #[test]
    fn with_a_larger_share_one_submitter_uses_several_workers() {
        let q = FairQueue::new(2);
        for i in 0..3 {
            q.push("a", i, true);
        }
        let (_x, v1) = q.take().unwrap();
        let (_y, v2) = q.take().unwrap();
        assert_eq!((v1, v2), (0, 1));
        q.push("b", 9, true);
        let (_z, v3) = q.take().unwrap();
        assert_eq!(v3, 9, "a is at its share of two");
    }

    #[test]
    fn light_items_use_every_worker_and_a_newcomer_goes_first() {
        let q = FairQueue::new(1);
        for i in 0..4 {
            q.push("a", i, false);
        }
        let (_x, v1) = q.take().unwrap();
        let (_y, v2) = q.take().unwrap();
        assert_eq!((v1, v2), (0, 1), "light items are not held to the share");
        q.push("b", 9, false);
        let (_z, v3) = q.take().unwrap();
        assert_eq!(v3, 9, "b had nothing queued: it goes before a, which was just served");
        let (_w, v4) = q.take().unwrap();
        assert_eq!(v4, 2);
    }
}
