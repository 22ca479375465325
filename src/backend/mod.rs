//! Long-lived helpers a mode depends on: the FastCGI worker pool.

mod peer;
pub mod workers;
