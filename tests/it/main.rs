//! Integration tests: each starts the real `fwatchdog` binary on port 0 and talks to it
//! over HTTP, as a user's orchestrator and clients would.

mod util;

mod adversarial;
mod adversarial_input;
mod auth;
mod budget;
mod cgi;
mod docker;
mod docs;
mod endpoints;
mod examples;
mod fastcgi;
mod faults;
mod files;
mod handler;
mod hostile;
mod http;
mod jwt;
mod lambda;
mod lifecycle;
mod matrix;
mod observability;
mod openfaas;
mod protocol;
mod queue;
mod readme;
mod serializing;
mod startup;
mod streaming;
mod templates;
mod threads;
mod timing;
