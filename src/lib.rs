//! fwatchdog: the function watchdog that sits as a container's ENTRYPOINT.
//!
//! The life of a request: [`server`] accepts a connection and hands each request to
//! [`service::Shared::handle`], which answers health probes itself, checks the API key
//! ([`auth`]), takes a concurrency slot, and passes the request to a runner
//! ([`runner`]). In the fork modes the runner starts the handler through [`process`],
//! which owns every `wait` so that exit statuses are exact even when we are PID 1.
//!
//! The life of the process: `main` parses [`cli`] into a validated [`config::Config`]
//! (exit 2 on anything invalid), [`server::run`] binds, becomes ready, serves, and
//! drains on SIGTERM ([`signal`]), and the result is an [`exit::Exit`] code.

pub mod auth;
pub mod backend;
pub mod body;
pub mod cli;
pub mod config;
pub mod conn;
pub mod exit;
pub mod header;
pub mod healthcheck;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod queue;
pub mod runner;
pub mod server;
pub mod service;
pub mod signal;
