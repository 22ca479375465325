//! The function: takes the request body, returns the response body.

/// Handles one request. An `Err` becomes a 500 (the message is logged, not sent).
pub fn handle(req: &[u8]) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    let said = String::from_utf8_lossy(req);
    Ok(format!("Hello from Rust! You said: {said}").into_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn greets() {
        let out = super::handle(b"hi").expect("handle");
        assert_eq!(out, b"Hello from Rust! You said: hi");
    }
}
