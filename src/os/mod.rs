//! The operating-system layer: starting handlers, process groups, reaping, signals.
//!
//! This is the only module allowed `unsafe` (the crate denies it everywhere else, and a
//! test fails if an `allow(unsafe_code)` appears outside this folder): the few calls
//! that the safe wrappers of `nix` and the standard library do not cover — `posix_spawn`
//! with every signal reset, `sigaction` at startup, the raw `rt_sigaction` for the
//! real-time signals — live here, each behind a safe function whose arguments cannot
//! make it unsound.

#![allow(unsafe_code)]

pub mod process;
pub mod signal;
