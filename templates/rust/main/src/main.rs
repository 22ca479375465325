//! The program fwatchdog runs once per request: the request body on stdin, the response
//! on stdout. An error from the handler goes to stderr (fwatchdog logs it) and makes the
//! exit status non-zero, which fwatchdog answers with a 500.

use std::io::{Read, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("reading the request body: {e}");
        return ExitCode::FAILURE;
    }
    match handler::handle(&body) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if let Err(e) = stdout.write_all(&out).and_then(|()| stdout.flush()) {
                eprintln!("writing the response: {e}");
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
