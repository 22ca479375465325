//! fwatchdog: the function watchdog that sits as a container's ENTRYPOINT.
//!
//! The life of a request: [`server`] accepts a connection and hands each request to
//! [`service::Shared::handle`], which answers health probes itself, checks the API key
//! ([`auth`]), takes a concurrency slot ([`queue`]), and passes the request to a runner
//! ([`runner`]: `fork`, `proxy`, `files`, `fastcgi`). A runner that cannot give the
//! function's answer gives a [`runner::Failure`]'s, which always says how long it took.
//! In the fork modes the runner starts the handler through [`os::process`], which owns
//! every `wait` so that exit statuses are exact even when we are PID 1.
//!
//! The life of the process: `main` parses [`cli`] into a validated [`config::Config`]
//! (exit 2 on anything invalid); [`server::run`] binds, starts the mode's
//! [`backend::Backend`] (http mode's upstream, the FastCGI workers or server) and waits
//! until it is ready, writes the lock file, serves, and on SIGTERM ([`os::signal`]) or the
//! backend's death drains, stops the backend, and returns an [`exit::Exit`] code.
//!
//! Imports run one way: [`server`] → [`service`] → [`runner`] → the leaf modules
//! ([`body`], [`header`], [`os`], [`queue`], [`config`], ...), and [`server`] →
//! [`backend`] → [`runner`]'s pipes and its [`runner::fastcgi::Pool`] view of the
//! workers. Nothing below `service` knows it, and no runner knows the backend: health
//! learns that the backend is ready through a [`backend::Ready`] handle whose receiver
//! the server gives the chain.

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
pub mod os;
pub mod queue;
pub mod runner;
pub mod server;
pub mod service;
