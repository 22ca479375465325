//! Where invocations meet runtimes: the line of invocations waiting for a runtime, the
//! invocations a runtime has taken (by request id), and what is known of each runtime
//! process (its pid, which life it is in, whether it has asked for work yet).
//!
//! The runner puts an invocation in line ([`Hub::submit`]) and waits for its
//! [`Outcome`]; a runtime's parked `next` takes the first one still wanted
//! ([`Hub::take`]); the runtime's `response` or `error` settles it
//! ([`Hub::claim`]). Three things can settle it first, each exactly once because each
//! removes the id from the table before it acts: its deadline (the runtime's group is
//! killed, since a Lambda runtime cannot be interrupted), the runtime's death
//! ([`Hub::runtime_exited`]), and the answer itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderValue;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot, watch};

use super::super::{Budget, Deadline};
use crate::body::Body;
use crate::metrics::{Invocation as Counted, Metrics};
use crate::os::process;

/// How an invocation ended, as the runner learns it.
pub enum Outcome {
    /// The runtime's result: buffered (`streaming` false, the whole body) or streamed
    /// (frames as the runtime sends them; an error frame aborts).
    Result {
        content_type: Option<HeaderValue>,
        body: Body,
        streaming: bool,
    },
    /// The runtime reported a function error: its type and the error document.
    Error { error_type: String, body: Bytes },
    /// A buffered result over `max_response_bytes` (this limit).
    TooLarge(u64),
    /// The deadline came first; the runtime was killed.
    Timeout(Deadline),
    /// The runtime exited while it had the invocation (its exit status, for the log).
    Exited(String),
}

/// An invocation waiting for a runtime.
pub struct Pending {
    pub id: String,
    pub event: Bytes,
    /// `X-Amzn-Trace-Id`.
    pub trace_id: Option<HeaderValue>,
    /// `X-Amz-Client-Context`, decoded.
    pub client_context: Option<HeaderValue>,
    pub budget: Budget,
    /// The request's concurrency slot, held until the runtime is done with it.
    pub slot: Option<crate::queue::Slot>,
    /// The runner waiting; dropped when it stopped waiting (client gone, deadline).
    pub reply: oneshot::Sender<Outcome>,
}

/// An invocation a runtime has taken.
pub struct Taken {
    /// The runtime's slot and process group.
    pub runtime: usize,
    pub pid: i32,
    pub deadline: Deadline,
    /// `None` once the runtime started to answer (a stream in progress).
    pub reply: Option<oneshot::Sender<Outcome>>,
    pub budget: Budget,
    _slot: Option<crate::queue::Slot>,
}

/// What the hub knows of one runtime slot.
pub struct Runtime {
    /// The process now in the slot; 0 while there is none.
    pid: AtomicI32,
    /// Bumped at each death, so `next` calls parked by a dead process end.
    life: watch::Sender<u64>,
    /// Whether the process now in the slot has asked for work.
    parked: AtomicBool,
    /// Whether any process in the slot ever has.
    ever_parked: AtomicBool,
    /// The last `init/error` its process reported.
    init_error: Mutex<Option<String>>,
    /// The call id of its single invocation in progress, for its log lines.
    call_id: Mutex<String>,
}

pub struct Hub {
    tx: mpsc::UnboundedSender<Pending>,
    line: tokio::sync::Mutex<mpsc::UnboundedReceiver<Pending>>,
    taken: Mutex<HashMap<String, Taken>>,
    pub runtimes: Vec<Runtime>,
    /// Runtimes that have asked for work at least once: health waits for all.
    ready: watch::Sender<usize>,
    /// Init failures in a row with no invocation served in between.
    init_failures: AtomicU32,
    /// Set when init failed too often: why.
    fatal: watch::Sender<Option<String>>,
    pub metrics: Arc<Metrics>,
    /// `arn:aws:lambda:<region>:012345678912:function:<name>`.
    pub arn: HeaderValue,
}

/// Init failures in a row after which the watchdog gives up (exit 1).
pub const INIT_FAILURES_FATAL: u32 = 3;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(runtimes: usize, arn: HeaderValue, metrics: Arc<Metrics>) -> Arc<Hub> {
        let (tx, rx) = mpsc::unbounded_channel();
        Arc::new(Hub {
            tx,
            line: tokio::sync::Mutex::new(rx),
            taken: Mutex::default(),
            runtimes: (0..runtimes)
                .map(|_| Runtime {
                    pid: AtomicI32::new(0),
                    life: watch::channel(0).0,
                    parked: AtomicBool::new(false),
                    ever_parked: AtomicBool::new(false),
                    init_error: Mutex::new(None),
                    call_id: Mutex::new(String::new()),
                })
                .collect(),
            ready: watch::channel(0).0,
            init_failures: AtomicU32::new(0),
            fatal: watch::channel(None).0,
            metrics,
            arn,
        })
    }

    /// Puts an invocation in line.
    pub fn submit(&self, p: Pending) {
        // The receiver lives as long as the hub.
        let _ = self.tx.send(p);
    }

    /// The first invocation in line whose caller still waits, for a `next` of
    /// `runtime`; `None` if that runtime's process died meanwhile (its parked call is
    /// then moot).
    pub async fn take(&self, runtime: usize) -> Option<Pending> {
        let rt = self.runtimes.get(runtime)?;
        let mut life = rt.life.subscribe();
        life.borrow_and_update();
        let first = !rt.parked.swap(true, Ordering::AcqRel);
        if first {
            // Its init went well: a new run of failures starts from here.
            self.init_failures.store(0, Ordering::Release);
            // Counted once per slot, however often it restarts.
            if !rt.ever_parked.swap(true, Ordering::AcqRel) {
                self.ready.send_modify(|n| *n += 1);
            }
        }
        let wait = async {
            let mut line = self.line.lock().await;
            loop {
                let p = line.recv().await?;
                if !p.reply.is_closed() {
                    return Some(p);
                }
            }
        };
        tokio::select! {
            p = wait => p,
            _ = life.changed() => None,
        }
    }

    /// Records that the process `pid` of `runtime` took `p`, until `deadline`; at the
    /// deadline, if still unanswered, the runtime is killed and the caller told.
    ///
    /// Returns the request id the runtime is told: the invocation's, unless another
    /// invocation in progress already has it (two requests with the same `X-Call-Id`),
    /// then a fresh one, so that each answer reaches its own caller.
    pub fn record(
        self: &Arc<Self>,
        runtime: usize,
        pid: i32,
        deadline: Deadline,
        p: Pending,
    ) -> String {
        let Pending {
            id,
            budget,
            slot,
            reply,
            ..
        } = p;
        let taken = Taken {
            runtime,
            pid,
            deadline,
            reply: Some(reply),
            budget,
            _slot: slot,
        };
        let id = {
            let mut table = lock(&self.taken);
            let id = if table.contains_key(&id) {
                crate::logging::new_call_id()
            } else {
                id
            };
            table.insert(id.clone(), taken);
            id
        };
        if let Some(rt) = self.runtimes.get(runtime) {
            *lock(&rt.call_id) = id.clone();
        }
        let answer_id = id.clone();
        let hub = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.at.into()).await;
            let Some(t) = lock(&hub.taken).remove(&id) else {
                return;
            };
            tracing::warn!(
                "Lambda invocation {id} timed out ({}): SIGKILL to its runtime (pid {}), which is restarted",
                deadline.exceeded(),
                t.pid
            );
            hub.metrics.lambda.count(Counted::Timeout);
            process::signal_group(t.pid, Signal::SIGKILL);
            if let Some(r) = t.reply {
                let _ = r.send(Outcome::Timeout(deadline));
            }
        });
        answer_id
    }

    /// The runtime's answer to `id` begins: its record, unless the id is unknown, already
    /// answered or timed out. With `whole`, the record is removed (a buffered answer or
    /// an error); else it stays (without its reply) until [`Hub::finish`], so a deadline
    /// or a death still ends the stream.
    pub fn claim(&self, id: &str, whole: bool) -> Option<(oneshot::Sender<Outcome>, Budget)> {
        let mut taken = lock(&self.taken);
        let t = taken.get_mut(id)?;
        let reply = t.reply.take()?;
        let budget = t.budget.clone();
        if whole {
            taken.remove(id);
        }
        Some((reply, budget))
    }

    /// A streamed answer ended (cleanly or not); whether it was still ours (not ended by
    /// the deadline or a death meanwhile).
    pub fn finish(&self, id: &str) -> bool {
        lock(&self.taken).remove(id).is_some()
    }

    /// An invocation was answered: init is behind us, and the log tag is cleared.
    pub fn served(&self, runtime: usize, outcome: Counted) {
        self.init_failures.store(0, Ordering::Release);
        self.metrics.lambda.count(outcome);
        if let Some(rt) = self.runtimes.get(runtime) {
            lock(&rt.call_id).clear();
        }
    }

    /// The slot of the request id `id`, while it is in progress.
    pub fn runtime_of(&self, id: &str) -> Option<usize> {
        lock(&self.taken).get(id).map(|t| t.runtime)
    }

    /// A new process `pid` now runs in `runtime`.
    pub fn runtime_started(&self, runtime: usize, pid: i32) {
        if let Some(rt) = self.runtimes.get(runtime) {
            rt.pid.store(pid, Ordering::Release);
            rt.parked.store(false, Ordering::Release);
            *lock(&rt.init_error) = None;
        }
    }

    /// The process now in `runtime`, 0 if none.
    pub fn pid(&self, runtime: usize) -> i32 {
        self.runtimes
            .get(runtime)
            .map_or(0, |rt| rt.pid.load(Ordering::Acquire))
    }

    /// The call id of the invocation `runtime` works on, for its log lines.
    pub fn call_id(&self, runtime: usize) -> String {
        self.runtimes
            .get(runtime)
            .map(|rt| lock(&rt.call_id).clone())
            .unwrap_or_default()
    }

    /// `init/error` from the process of `runtime`.
    pub fn init_error(&self, runtime: usize, why: String) {
        if let Some(rt) = self.runtimes.get(runtime) {
            *lock(&rt.init_error) = Some(why);
        }
    }

    /// The process `pid` of `runtime` exited with `status`: its invocations fail, its
    /// parked calls end, and a death before its first `next` counts as an init
    /// failure. Returns whether it was one (the supervisor backs off).
    pub fn runtime_exited(&self, runtime: usize, pid: i32, status: &str, stopping: bool) -> bool {
        let Some(rt) = self.runtimes.get(runtime) else {
            return false;
        };
        rt.pid.store(0, Ordering::Release);
        rt.life.send_modify(|n| *n += 1);
        lock(&rt.call_id).clear();
        let orphans: Vec<(String, Taken)> = {
            let mut taken = lock(&self.taken);
            let ids: Vec<String> = taken
                .iter()
                .filter(|(_, t)| t.pid == pid)
                .map(|(id, _)| id.clone())
                .collect();
            ids.into_iter()
                .filter_map(|id| taken.remove(&id).map(|t| (id, t)))
                .collect()
        };
        for (id, t) in orphans {
            tracing::error!(
                "Lambda invocation {id} failed: its runtime (pid {pid}) exited: {status}"
            );
            self.metrics.lambda.count(Counted::Exited);
            if let Some(r) = t.reply {
                let _ = r.send(Outcome::Exited(status.to_owned()));
            }
        }
        let parked = rt.parked.swap(false, Ordering::AcqRel);
        if parked || stopping {
            return false;
        }
        let why = lock(&rt.init_error).take().unwrap_or_else(|| {
            format!("the runtime exited before asking for an invocation: {status}")
        });
        let n = self.init_failures.fetch_add(1, Ordering::AcqRel) + 1;
        tracing::error!("Lambda runtime init failed ({n} in a row): {why}");
        if n >= INIT_FAILURES_FATAL {
            self.fatal.send_replace(Some(format!(
                "Lambda runtime init failed {n} times in a row, last: {why}; exiting"
            )));
        }
        true
    }

    /// Runtimes that have asked for work at least once.
    pub fn ready(&self) -> watch::Receiver<usize> {
        self.ready.subscribe()
    }

    /// Whether init has failed too often (the watchdog is exiting).
    pub fn gave_up(&self) -> bool {
        self.fatal.borrow().is_some()
    }

    /// Resolves with why, once init has failed too often.
    pub async fn fatal(&self) -> String {
        let mut rx = self.fatal.subscribe();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone(),
            Err(_) => None,
        };
        match why {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }
}
