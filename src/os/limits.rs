//! The open-file limit.
//!
//! Many containers inherit a soft `RLIMIT_NOFILE` of 1024 (systemd's default) under a
//! much higher hard limit. A fork-mode request holds about four descriptors (the
//! connection and the handler's three pipes), so 1024 runs out near 250 concurrent
//! requests and the next handler cannot start. Like Go's runtime, we raise the soft
//! limit to the hard one at startup.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// The open-file limit after [`raise_nofile`]: `soft` is what the process may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nofile {
    pub soft: u64,
    pub hard: u64,
    /// The soft limit before, when it was raised.
    pub raised_from: Option<u64>,
}

/// Raises the soft open-file limit to the hard one. An error names the system call.
pub fn raise_nofile() -> Result<Nofile, String> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}"))?;
    if soft >= hard {
        return Ok(Nofile {
            soft,
            hard,
            raised_from: None,
        });
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
        .map_err(|e| format!("setrlimit(RLIMIT_NOFILE, {hard}): {e}"))?;
    Ok(Nofile {
        soft: hard,
        hard,
        raised_from: Some(soft),
    })
}

/// Descriptors the process holds whatever the traffic: stdio, listeners, the runtime's
/// own, the log, a few spares.
const RESERVE: u64 = 32;

/// Whether `soft` open files can carry `max_connections` requests of `per_request`
/// descriptors each; `Err` carries how many they need.
pub fn carries(soft: u64, max_connections: usize, per_request: u64) -> Result<(), u64> {
    let need = (max_connections as u64)
        .saturating_mul(per_request)
        .saturating_add(RESERVE);
    if soft >= need {
        Ok(())
    } else {
        Err(need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_need_counts_every_connection_and_a_reserve() {
        assert_eq!(carries(1024, 512, 4), Err(2080));
        assert_eq!(carries(2080, 512, 4), Ok(()));
        assert_eq!(carries(1024, 100, 2), Ok(()));
        assert_eq!(carries(u64::MAX, usize::MAX, 4), Ok(()));
    }

    #[test]
    fn raising_leaves_soft_equal_to_hard() {
        let n = raise_nofile().expect("raise");
        assert_eq!(n.soft, n.hard);
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!((soft, hard), (n.soft, n.hard));
    }
}
