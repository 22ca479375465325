//! Who may call the function: one chain over the configured checks.

pub mod api_key;

pub use api_key::{parse_keys, ApiKeys, Key};
