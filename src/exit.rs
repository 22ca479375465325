//! Exit codes: what an orchestrator or a shell learns from how we ended.

/// 0 clean shutdown · 1 runtime failure · 2 bad configuration or missing secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Clean = 0,
    Runtime = 1,
    Config = 2,
}

impl From<Exit> for std::process::ExitCode {
    fn from(e: Exit) -> Self {
        std::process::ExitCode::from(e as u8)
    }
}
