//! The module's own diagnostics, through the `log` crate.
//!
//! Nothing is printed unless `LLTHREADS_LOG` names a level (`error`, `warn`, `info`,
//! `debug`, `trace`); then records at that level or above go to stderr, one a line,
//! prefixed with `llthreads:`.

use std::io::Write;
use std::sync::Once;

use log::{LevelFilter, Log, Metadata, Record};

struct StderrSink;

impl Log for StderrSink {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            let mut err = std::io::stderr().lock();
            let _ = writeln!(err, "llthreads: {}: {}", record.level(), record.args());
        }
    }

    fn flush(&self) {}
}

static SINK: StderrSink = StderrSink;
static INIT: Once = Once::new();

/// Reads `LLTHREADS_LOG` once per process and installs the sink when it is set.
pub fn init() {
    INIT.call_once(|| {
        let Some(level) = std::env::var("LLTHREADS_LOG")
            .ok()
            .and_then(|v| parse_level(&v))
        else {
            return;
        };
        if log::set_logger(&SINK).is_ok() {
            log::set_max_level(level);
        }
    });
}

fn parse_level(v: &str) -> Option<LevelFilter> {
    match v.trim().to_ascii_lowercase().as_str() {
        "error" => Some(LevelFilter::Error),
        "warn" | "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" | "1" | "on" => Some(LevelFilter::Debug),
        "trace" => Some(LevelFilter::Trace),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively() {
        assert_eq!(parse_level("DEBUG"), Some(LevelFilter::Debug));
        assert_eq!(parse_level(" warn "), Some(LevelFilter::Warn));
        assert_eq!(parse_level("off"), None);
        assert_eq!(parse_level(""), None);
    }
}
