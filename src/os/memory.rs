//! Giving freed memory back to the system after a spike.
//!
//! The static builds allocate with mimalloc, which keeps memory it has freed for reuse
//! and hands it back to the kernel ("purges" it) only from inside a later allocation or
//! free, once it has been free for a while. After a spike (a 256 MiB body held whole, a
//! large buffered upload) an idle watchdog would keep it resident for good, counted
//! against its container's memory limit. Purging at once instead (`purge_delay=0`)
//! returned it but cost a serializing request with a 1 MiB body 25 times the page
//! faults. So a request that ends wakes [`give_back`], which lets the memory settle and
//! then asks the allocator to purge what is free: at most once per [`SETTLE`] under
//! load, never while idle. glibc's allocator returns large blocks by itself.

use std::time::Duration;

use tokio::sync::Notify;

/// How long after a request ends freed memory is given back (and, under load, how
/// often).
pub const SETTLE: Duration = Duration::from_secs(1);

static ENDED: Notify = Notify::const_new();

/// A request has ended: what it freed is given back within [`SETTLE`] or so.
pub fn request_ended() {
    ENDED.notify_one();
}

/// Runs for the life of the server: after each burst of requests, once things settle,
/// gives the memory they freed back to the system.
pub async fn give_back() {
    loop {
        ENDED.notified().await;
        tokio::time::sleep(SETTLE).await;
        purge();
    }
}

/// mimalloc's `arena_reserve` option, in KiB: the address space its first arena
/// reserves. The default (1 GiB) also commits that arena's bookkeeping, about 200 KiB
/// of every idle process; a quarter of it costs a fraction of that, and a body that
/// needs more than it has gets further arenas as before.
#[cfg(target_env = "musl")]
const ARENA_RESERVE_KIB: std::ffi::c_long = 256 * 1024;

/// Sets mimalloc's defaults before anything allocates: as a constructor (`.init_array`),
/// which the C runtime runs before Rust's own start-up code allocates for the first
/// time. A `MIMALLOC_ARENA_RESERVE` in the environment still wins, as a default only.
#[cfg(target_env = "musl")]
#[used]
#[link_section = ".init_array"]
static SET_ALLOCATOR_DEFAULTS: extern "C" fn() = set_allocator_defaults;

#[cfg(target_env = "musl")]
extern "C" fn set_allocator_defaults() {
    extern "C" {
        fn mi_option_set_default(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    /// `mi_option_arena_reserve` in mimalloc.h's `mi_option_e`.
    const MI_OPTION_ARENA_RESERVE: std::ffi::c_int = 23;
    // SAFETY: mimalloc is linked in (the global allocator of musl builds, main.rs); setting
    // an option's default takes no pointers and is valid before mimalloc is initialised.
    unsafe { mi_option_set_default(MI_OPTION_ARENA_RESERVE, ARENA_RESERVE_KIB) }
}

#[cfg(target_env = "musl")]
fn purge() {
    extern "C" {
        /// mimalloc's: collects this thread's free pages and, with `force`, purges every
        /// free range of every arena now, whatever the purge delay.
        fn mi_collect(force: bool);
    }
    // SAFETY: mimalloc is the global allocator of musl builds (main.rs) and `mi_collect`
    // may be called from any thread at any time; it takes no pointers.
    unsafe { mi_collect(true) }
}

#[cfg(not(target_env = "musl"))]
fn purge() {}
