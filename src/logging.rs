//! Logs go to stderr (or `LITESTREAM_LOG_FILE`), never stdout: that would corrupt the host
//! program's output. Off unless `LITESTREAM_LOG` (or `RUST_LOG`) names a level.

use std::io::Write;
use std::sync::OnceLock;

use parking_lot::Mutex;

struct Logger {
    level: log::LevelFilter,
    file: Option<Mutex<std::fs::File>>,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "{} {:5} litestream[{}]: {}\n",
            crate::timefmt::rfc3339_millis(crate::timefmt::now_millis()),
            record.level(),
            std::process::id(),
            record.args()
        );
        // A log line must never fail the caller.
        let _ = match &self.file {
            Some(f) => f.lock().write_all(line.as_bytes()),
            None => std::io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

fn parse_level(s: &str) -> log::LevelFilter {
    s.trim().parse().unwrap_or(log::LevelFilter::Off)
}

/// Installs the logger once, from the environment; a host that set its own logger keeps it.
pub fn init() {
    static LOGGER: OnceLock<Logger> = OnceLock::new();
    let logger = LOGGER.get_or_init(|| {
        let level = std::env::var("LITESTREAM_LOG")
            .or_else(|_| std::env::var("RUST_LOG"))
            .map(|v| parse_level(&v))
            .unwrap_or(log::LevelFilter::Off);
        let file = std::env::var_os("LITESTREAM_LOG_FILE").and_then(|p| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .ok()
                .map(Mutex::new)
        });
        Logger { level, file }
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.level);
    }
}
