//! `fprocess` splitting (split like a POSIX shell, quotes and backslashes
//! honoured, no expansion).
//!
//! Invariant: the configuration either takes the words `shell_words::split` makes
//! (never none) or refuses the value naming `fprocess`; it never panics. The command
//! the startup line shows (`shell_words::join`) splits back into the very same argv, so
//! what the log says is what runs.
#![no_main]

use std::collections::HashMap;

use fwatchdog::cli::{parse, Action};
use fwatchdog::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let env: HashMap<&str, &str> = [("fprocess", s)].into();
    let Ok(Action::Run(raw)) = parse(["fwatchdog".to_owned()], |k| {
        env.get(k).map(|v| v.to_string())
    }) else {
        panic!("env parsing never fails");
    };
    let words = shell_words::split(s);
    match Config::from_raw(&raw) {
        Ok(cfg) => {
            assert!(!cfg.fprocess.is_empty());
            assert_eq!(Ok(&cfg.fprocess), words.as_ref(), "{s:?}");
            let shown = shell_words::join(&cfg.fprocess);
            assert_eq!(
                shell_words::split(&shown).as_ref(),
                Ok(&cfg.fprocess),
                "{s:?} shown as {shown:?}"
            );
        }
        Err(e) => {
            assert!(e.0.contains("fprocess"), "{e}");
            assert!(
                words.map_or(true, |w| w.is_empty()),
                "{s:?} splits but was refused: {e}"
            );
        }
    }
});
