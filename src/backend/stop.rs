//! What every backend does the same way: wait until it is ready, and stop its process
//! groups (SIGTERM, a grace, SIGKILL).

use std::future::Future;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::duration::format_duration;
use crate::os::process;

/// How long a backend's processes may take to exit after SIGTERM before they get SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(5);
/// After SIGKILL, how long we still wait to see them gone.
const AFTER_KILL: Duration = Duration::from_secs(1);
/// The longest pause between two readiness attempts.
const MAX_PAUSE: Duration = Duration::from_millis(100);

/// Calls `attempt` until it succeeds or `within` has passed, pausing 5 ms between tries,
/// doubling to 100 ms. An attempt still running at the deadline is abandoned. The error
/// is the last attempt's.
pub async fn until_ready<A, F>(within: Duration, mut attempt: A) -> Result<(), String>
where
    A: FnMut() -> F,
    F: Future<Output = Result<(), String>>,
{
    let give_up = tokio::time::Instant::now() + within;
    let mut last = String::from("no attempt finished");
    let mut pause = Duration::from_millis(5);
    loop {
        tokio::select! {
            // An attempt that finished counts, even at the deadline.
            biased;
            r = attempt() => match r {
                Ok(()) => return Ok(()),
                Err(why) => last = why,
            },
            _ = tokio::time::sleep_until(give_up) => {}
        }
        if tokio::time::Instant::now() >= give_up {
            return Err(last);
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = tokio::time::sleep_until(give_up) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// SIGTERM to each process group in `groups`; if `gone` has not resolved [`KILL_AFTER`]
/// later, SIGKILL to each, and a last moment for `gone`. `who` names them in the log.
pub async fn terminate<F: Future<Output = ()>>(who: &str, groups: &[i32], gone: F) {
    for pid in groups {
        process::signal_group(*pid, Signal::SIGTERM);
    }
    tokio::pin!(gone);
    if tokio::time::timeout(KILL_AFTER, &mut gone).await.is_err() {
        tracing::info!(
            "{who} still running {} after SIGTERM: SIGKILL",
            format_duration(KILL_AFTER)
        );
        for pid in groups {
            process::signal_group(*pid, Signal::SIGKILL);
        }
        let _ = tokio::time::timeout(AFTER_KILL, gone).await;
    }
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

    #[tokio::test]
    async fn until_ready_retries_until_an_attempt_succeeds() {
        let mut tries = 0;
        let r = until_ready(Duration::from_secs(1), || {
            tries += 1;
            let n = tries;
            async move {
                if n < 3 {
                    Err(format!("try {n}"))
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert_eq!(r, Ok(()));
        assert_eq!(tries, 3);
    }

    #[tokio::test]
    async fn until_ready_gives_up_with_the_last_error() {
        let mut tries = 0;
        let r = until_ready(Duration::from_millis(300), || {
            tries += 1;
            let n = tries;
            async move { Err(format!("try {n}")) }
        })
        .await;
        assert_eq!(r, Err(format!("try {tries}")));
        assert!(tries > 2, "{tries}");
    }
}
