//! The `Config:` startup log line: every effective setting as `name=value`, section by
//! section, a section's mode-specific settings only in that mode. Secrets appear by
//! name only.

use std::fmt::Write;

use super::{
    Auth, Config, FastCgiAddress, FastCgiConfig, ForkIo, Limits, Listen, LogFormat, Logs, Mode,
    Proxy, StaticFiles, Timeouts,
};
use crate::duration::format_duration;

impl Config {
    /// Settings for the startup log line; secrets appear by name only.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "mode={} fprocess={:?}",
            self.mode.name(),
            shell_words::join(&self.fprocess)
        );
        self.listen.summary(&mut out);
        self.timeouts.summary(&mut out);
        self.limits.summary(&mut out);
        let lock = self.lock_file.as_ref();
        let lock = lock.map_or_else(|| "off".to_owned(), |p| p.display().to_string());
        let _ = write!(out, " lock_file={lock}");
        self.logs.summary(&mut out);
        self.fork_io.summary(self.mode, &mut out);
        match self.mode {
            Mode::Static => self.static_files.summary(&mut out),
            Mode::FastCgi => self.fastcgi.summary(&mut out),
            Mode::Lambda => {
                let _ = write!(out, " pool_size={}", self.lambda.pool_size);
            }
            _ => {}
        }
        self.proxy.summary(&mut out);
        if self.mode == Mode::Http {
            let grace = format_duration(self.timeouts.upstream_stop_grace);
            let _ = write!(out, " upstream_stop_grace={grace}");
        }
        self.auth.summary(&mut out);
        out
    }
}

/// A byte count, or `unlimited`.
fn limit(n: Option<u64>) -> String {
    n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
}

impl Listen {
    fn summary(&self, out: &mut String) {
        let metrics = self.metrics_port;
        let _ = write!(
            out,
            " port={} bind={} metrics_port={} max_connections={}",
            self.port,
            self.bind,
            metrics.map_or_else(|| "off".to_owned(), |p| p.to_string()),
            self.max_connections,
        );
        if self.threads > 1 {
            let _ = write!(out, " threads={}", self.threads);
        }
    }
}

impl Timeouts {
    fn summary(&self, out: &mut String) {
        let exec = self.exec.map(format_duration);
        let _ = write!(
            out,
            " read_timeout={} write_timeout={} exec_timeout={} healthcheck_interval={}",
            format_duration(self.read),
            format_duration(self.write),
            exec.as_deref().unwrap_or("0 (no limit)"),
            format_duration(self.healthcheck_interval),
        );
        if !self.exec_kill_grace.is_zero() {
            let grace = format_duration(self.exec_kill_grace);
            let _ = write!(out, " exec_kill_grace={grace}");
        }
        let startup = self.startup.map(format_duration);
        let _ = write!(
            out,
            " startup_timeout={}",
            startup.as_deref().unwrap_or("0 (no limit)")
        );
    }
}

impl Limits {
    fn summary(&self, out: &mut String) {
        let _ = write!(
            out,
            " max_inflight={} max_body_bytes={} max_response_bytes={}",
            self.max_inflight.unwrap_or(0),
            limit(self.max_body_bytes),
            limit(self.max_response_bytes),
        );
        if self.max_queue > 0 {
            let _ = write!(
                out,
                " max_queue={} queue_timeout={}",
                self.max_queue,
                format_duration(self.queue_timeout)
            );
        }
    }
}

impl Logs {
    fn summary(&self, out: &mut String) {
        let format = match self.format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        };
        let _ = write!(
            out,
            " log_format={format} prefix_logs={} log_callid={} log_buffer_size={}",
            self.prefix,
            self.callid,
            limit(self.buffer_size.map(|n| n as u64)),
        );
    }
}

impl ForkIo {
    /// Shown only where they apply: every one of them shapes a forked handler's I/O.
    fn summary(&self, mode: Mode, out: &mut String) {
        if mode.is_fork() {
            let _ = write!(
                out,
                " content_type={} write_debug={} cgi_headers={} combine_output={} marshal_request={}",
                self.content_type.as_deref().unwrap_or("(request's)"),
                self.write_debug,
                self.cgi_headers,
                self.combine_output,
                self.marshal_request
            );
        }
        if self.cgi {
            out.push_str(" cgi=true");
        }
    }
}

impl StaticFiles {
    fn summary(&self, out: &mut String) {
        let _ = write!(
            out,
            " static_path={} static_hidden_files={}",
            self.path.display(),
            self.hidden_files
        );
    }
}

impl Proxy {
    fn summary(&self, out: &mut String) {
        if let Some(url) = &self.upstream_url {
            let _ = write!(out, " upstream_url={url}");
        }
    }
}

impl FastCgiConfig {
    fn summary(&self, out: &mut String) {
        let address = self.address.as_ref();
        let address = address.map_or_else(|| "(spawned)".to_owned(), FastCgiAddress::to_string);
        let _ = write!(
            out,
            " fastcgi_address={address} pool_size={} pool_max_requests={}",
            self.pool_size, self.max_requests
        );
        if let Some(sf) = &self.script_filename {
            let _ = write!(out, " script_filename={sf}");
        }
    }
}

impl Auth {
    fn summary(&self, out: &mut String) {
        if let Some(keys) = &self.api_keys {
            let dirs: Vec<String> = self
                .secrets_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            let reload = self.secret_reload_interval;
            let _ = write!(
                out,
                " api_key_secret={} api_key_header={} api_key_forward={} secrets_dir={} secret_reload_interval={}",
                keys.names().join(","),
                crate::header::canonical(keys.header().as_str()),
                keys.forward(),
                dirs.join(","),
                reload.map_or_else(|| "0 (never)".to_owned(), format_duration),
            );
        }
        if let Some(jwt) = &self.jwt {
            let _ = write!(
                out,
                " jwt_auth=true jwt_auth_url={} jwt_auth_timeout={} function={}",
                jwt.url,
                format_duration(jwt.timeout),
                jwt.function
            );
        }
    }
}
