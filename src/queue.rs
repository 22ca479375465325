//! The bounded line in front of the concurrency limit (`max_queue`, `queue_timeout`).
//!
//! With every `max_inflight` slot taken, up to `max_queue` more requests wait for one,
//! each for at most `queue_timeout`; the rest get the 429 at once. Slots are permits of a
//! tokio [`Semaphore`]: it serves waiters strictly first come, first served, and hands a
//! released permit to the head of the line rather than to a newcomer. A waiting request
//! whose client goes away is a dropped future: its `Acquire` leaves the semaphore's line
//! and [`Place`] gives its place back, so neither a slot nor a place can leak.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Queue {
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max: usize,
    timeout: Duration,
}

/// Why a request got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `max_queue` requests were already waiting.
    Full,
    /// It waited `queue_timeout` (or until its write deadline) in vain.
    TimedOut,
}

/// One place in line, given back (and its wait measured) however the wait ends.
struct Place<'a> {
    queue: &'a Queue,
    metrics: &'a Metrics,
    since: Instant,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.queue.waiting.fetch_sub(1, Ordering::AcqRel);
        self.metrics.queue_depth.dec();
        self.metrics
            .queue_wait
            .observe(self.since.elapsed().as_secs_f64());
    }
}

impl Queue {
    /// `slots` concurrent requests, `max` more waiting, each for at most `timeout`.
    pub fn new(slots: usize, max: usize, timeout: Duration) -> Queue {
        Queue {
            slots: Arc::new(Semaphore::new(slots)),
            waiting: AtomicUsize::new(0),
            max,
            timeout,
        }
    }

    /// A slot, at once or after waiting in line; never waits past `until` (the request's
    /// write deadline). The slot is held until the permit is dropped.
    pub async fn slot(
        &self,
        until: Instant,
        metrics: &Metrics,
    ) -> Result<OwnedSemaphorePermit, Refused> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        metrics.queue_depth.inc();
        let place = Place {
            queue: self,
            metrics,
            since: Instant::now(),
        };
        let until = until.min(place.since + self.timeout);
        let got = tokio::time::timeout_at(until.into(), self.slots.clone().acquire_owned()).await;
        drop(place);
        match got {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it as a full line if it ever is.
            Ok(Err(_)) => Err(Refused::Full),
            Err(_) => Err(Refused::TimedOut),
        }
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }
}

/// A concurrency slot (`max_inflight`), given back when its last holder drops it: the
/// request's response body, and a runner whose work outlives the client.
#[derive(Clone)]
pub struct Slot {
    _held: Arc<SlotInner>,
}

impl Slot {
    /// A slot already counted in `inflight` (and, with `max_queue`, holding `permit`).
    pub fn new(inflight: Arc<AtomicUsize>, permit: Option<OwnedSemaphorePermit>) -> Slot {
        Slot {
            _held: Arc::new(SlotInner {
                inflight,
                _permit: permit,
            }),
        }
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

struct SlotInner {
    inflight: Arc<AtomicUsize>,
    /// With `max_queue`: the slot itself, released when this is dropped.
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    #[tokio::test]
    async fn waiters_get_slots_in_arrival_order() {
        let q = Arc::new(Queue::new(1, 3, Duration::from_secs(10)));
        let m = Metrics::new();
        let first = q.slot(far(), &m).await.expect("free slot");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for i in 0..3 {
            let (q2, m, tx) = (q.clone(), m.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                let permit = q2.slot(far(), &m).await.expect("queued slot");
                tx.send(i).expect("send");
                drop(permit);
            }));
            // Each joins the line before the next one arrives.
            while q.waiting() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(q.slot(far(), &m).await.err(), Some(Refused::Full));
        assert!(m.render().contains("fwatchdog_queue_depth 3"));
        drop(first);
        for t in tasks {
            t.await.expect("task");
        }
        let order: Vec<usize> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(q.waiting(), 0);
        let text = m.render();
        assert!(text.contains("fwatchdog_queue_depth 0"), "{text}");
        assert!(
            text.contains("fwatchdog_queue_wait_seconds_count 3"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_wait_ends_at_the_timeout_or_the_write_deadline() {
        let q = Queue::new(1, 5, Duration::from_millis(50));
        let m = Metrics::new();
        let _held = q.slot(far(), &m).await.expect("free slot");
        let t = Instant::now();
        assert_eq!(q.slot(far(), &m).await.err(), Some(Refused::TimedOut));
        assert!(t.elapsed() >= Duration::from_millis(50));
        let soon = Instant::now() + Duration::from_millis(10);
        let t = Instant::now();
        assert_eq!(q.slot(soon, &m).await.err(), Some(Refused::TimedOut));
        assert!(t.elapsed() < Duration::from_millis(45));
        assert_eq!(q.waiting(), 0);
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_line_and_takes_no_slot() {
        let q = Arc::new(Queue::new(1, 1, Duration::from_secs(10)));
        let m = Metrics::new();
        let held = q.slot(far(), &m).await.expect("free slot");
        let waiter = {
            let (q, m) = (q.clone(), m.clone());
            tokio::spawn(async move { q.slot(far(), &m).await.map(drop) })
        };
        while q.waiting() < 1 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(q.waiting(), 0, "the place is given back");
        drop(held);
        // The slot the gone waiter was in line for is free for the next request.
        let again = tokio::time::timeout(Duration::from_secs(1), q.slot(far(), &m)).await;
        assert!(matches!(again, Ok(Ok(_))));
        assert!(m.render().contains("fwatchdog_queue_depth 0"));
    }
}
