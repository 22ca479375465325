//! What every backend does the same way: wait until it is ready, and stop its process
//! groups (SIGTERM, a grace, SIGKILL).

use std::future::Future;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::watch;

use crate::duration::format_duration;
use crate::os::process;

/// How long a backend's processes may take to exit after SIGTERM before they get SIGKILL,
/// unless a setting says otherwise (the http upstream's is `upstream_stop_grace`).
pub const KILL_AFTER: Duration = Duration::from_secs(5);
/// After SIGKILL, how long we still wait to see them gone.
const AFTER_KILL: Duration = Duration::from_secs(1);
/// The longest pause between two readiness attempts.
const MAX_PAUSE: Duration = Duration::from_millis(100);
/// How often a wait for readiness says, in the log, what it is still waiting for.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// A wait for a backend to become ready: how long it may take (`None`: as long as it
/// takes, `startup_timeout=0`), and how often to say that it is still waiting.
#[derive(Debug, Clone, Copy)]
pub struct Wait {
    pub limit: Option<Duration>,
    pub report_every: Duration,
}

impl Wait {
    /// The wait `startup_timeout` asks for, reporting every [`REPORT_EVERY`].
    pub fn startup(limit: Option<Duration>) -> Wait {
        Wait {
            limit,
            report_every: REPORT_EVERY,
        }
    }

    /// `within 5s` or `as long as it takes`, for the log.
    pub fn describe(&self) -> String {
        match self.limit {
            Some(d) => format!("up to startup_timeout={}", format_duration(d)),
            None => "as long as it takes (startup_timeout=0)".to_owned(),
        }
    }
}

/// Calls `attempt` until it succeeds or the wait's limit has passed, pausing 5 ms
/// between tries, doubling to 100 ms. An attempt still running at the deadline is
/// abandoned. Every `report_every` it calls `report` with the time waited so far and the
/// last attempt's error ([`still_waiting`] logs them). The error returned is the last
/// attempt's.
pub async fn until_ready<A, F, R>(wait: Wait, mut attempt: A, mut report: R) -> Result<(), String>
where
    A: FnMut() -> F,
    F: Future<Output = Result<(), String>>,
    R: FnMut(Duration, &str),
{
    let started = tokio::time::Instant::now();
    let give_up = wait.limit.map(|d| started + d);
    let deadline = async move {
        match give_up {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval_at(started + wait.report_every, wait.report_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::from("no attempt finished");
    let mut pause = Duration::from_millis(5);
    loop {
        let mut failed = false;
        let try_once = attempt();
        tokio::pin!(try_once);
        while !failed {
            tokio::select! {
                // An attempt that finished counts, even at the deadline.
                biased;
                r = &mut try_once => match r {
                    Ok(()) => return Ok(()),
                    Err(why) => {
                        last = why;
                        failed = true;
                    }
                },
                _ = &mut deadline => return Err(last),
                _ = tick.tick() => report(started.elapsed(), &last),
            }
        }
        let rest = tokio::time::sleep(pause);
        tokio::pin!(rest);
        loop {
            tokio::select! {
                _ = &mut rest => break,
                _ = &mut deadline => return Err(last),
                _ = tick.tick() => report(started.elapsed(), &last),
            }
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The `report` of [`until_ready`] that logs `Still waiting for <what> (<time> so far):
/// <last error>`.
pub fn still_waiting(what: &str) -> impl FnMut(Duration, &str) + '_ {
    move |waited, last| {
        tracing::info!(
            "Still waiting for {what} ({} so far): {last}",
            format_duration(Duration::from_secs(waited.as_secs()))
        );
    }
}

/// SIGTERM to each process group in `groups`; if `gone` has not resolved `grace` later,
/// SIGKILL to each, and a last moment for `gone`. `who` names them in the log.
pub async fn terminate<F: Future<Output = ()>>(
    who: &str,
    groups: &[i32],
    grace: Duration,
    gone: F,
) {
    for pid in groups {
        process::signal_group(*pid, Signal::SIGTERM);
    }
    tokio::pin!(gone);
    if tokio::time::timeout(grace, &mut gone).await.is_err() {
        tracing::info!(
            "{who} still running {} after SIGTERM: SIGKILL",
            format_duration(grace)
        );
        for pid in groups {
            process::signal_group(*pid, Signal::SIGKILL);
        }
        let _ = tokio::time::timeout(AFTER_KILL, gone).await;
    }
}

/// Stops a pool of process groups after the drain (FastCGI workers, Lambda runtimes):
/// SIGTERM to every group in `pids` (0 = a slot without a process), SIGKILL to those
/// still running [`KILL_AFTER`] later. `alive` counts the pool's live processes: the wait
/// ends when it reaches 0. `noun` names one member (`"FastCGI worker"`) in the log.
pub async fn stop_pool(noun: &str, pids: &[i32], alive: &watch::Sender<usize>) {
    let pids: Vec<i32> = pids.iter().copied().filter(|p| *p != 0).collect();
    if !pids.is_empty() {
        tracing::info!(
            "Stopping {} {noun}(s): SIGTERM to their process groups",
            pids.len()
        );
    }
    let mut alive = alive.subscribe();
    let gone = async move {
        let _ = alive.wait_for(|n| *n == 0).await;
    };
    terminate(&format!("{noun}s"), &pids, KILL_AFTER, gone).await;
}

/// Resolves once no process is left in the group `pgid`.
pub async fn group_gone(pgid: i32) {
    while process::group_alive(pgid) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(limit: Option<Duration>) -> Wait {
        Wait {
            limit,
            report_every: REPORT_EVERY,
        }
    }

    #[tokio::test]
    async fn until_ready_retries_until_an_attempt_succeeds() {
        let mut tries = 0;
        let r = until_ready(
            wait(Some(Duration::from_secs(1))),
            || {
                tries += 1;
                let n = tries;
                async move {
                    if n < 3 {
                        Err(format!("try {n}"))
                    } else {
                        Ok(())
                    }
                }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(tries, 3);
    }

    #[tokio::test]
    async fn until_ready_gives_up_with_the_last_error() {
        let mut tries = 0;
        let r = until_ready(
            wait(Some(Duration::from_millis(300))),
            || {
                tries += 1;
                let n = tries;
                async move { Err(format!("try {n}")) }
            },
            |_, _| {},
        )
        .await;
        assert_eq!(r, Err(format!("try {tries}")));
        assert!(tries > 2, "{tries}");
    }

    /// With no limit it waits as long as it takes, and says so every `report_every`
    /// with the last error. Paused time: the test waits for nothing.
    #[tokio::test(start_paused = true)]
    async fn until_ready_without_a_limit_waits_and_reports_on_schedule() {
        let start = tokio::time::Instant::now();
        let ready_at = start + Duration::from_secs(35);
        let mut reports = Vec::new();
        let wait = Wait {
            limit: None,
            report_every: Duration::from_secs(10),
        };
        let r = until_ready(
            wait,
            || async move {
                if tokio::time::Instant::now() >= ready_at {
                    Ok(())
                } else {
                    Err("connection refused".to_owned())
                }
            },
            |waited, last: &str| reports.push((waited.as_secs(), last.to_owned())),
        )
        .await;
        assert_eq!(r, Ok(()));
        assert!(start.elapsed() >= Duration::from_secs(35));
        let refused = "connection refused".to_owned();
        assert_eq!(
            reports,
            [(10, refused.clone()), (20, refused.clone()), (30, refused)]
        );
    }

    /// A limit ends the wait with the last error, however often it reported.
    #[tokio::test(start_paused = true)]
    async fn until_ready_with_a_limit_gives_up_at_it() {
        let start = tokio::time::Instant::now();
        let mut reports = 0;
        let wait = Wait {
            limit: Some(Duration::from_secs(25)),
            report_every: Duration::from_secs(10),
        };
        let r = until_ready(
            wait,
            || async { Err("not yet".to_owned()) },
            |_, _| reports += 1,
        )
        .await;
        assert_eq!(r, Err("not yet".to_owned()));
        assert_eq!(reports, 2);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(25) && took < Duration::from_secs(26),
            "{took:?}"
        );
    }
}
