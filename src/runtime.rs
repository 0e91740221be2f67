//! The one process-wide async runtime: created on first use, never dropped (the extension
//! stays loaded for the life of the process). SQLite's callbacks are synchronous; they hand
//! work to it with [`block_on`] or [`spawn`].

use std::future::Future;
use std::sync::OnceLock;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

pub fn get() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .thread_name("litestream-io")
            .enable_all()
            .build()
            .expect("cannot start the litestream I/O runtime")
    })
}

/// Runs a future to completion from a synchronous caller (never from a runtime thread).
pub fn block_on<F: Future>(f: F) -> F::Output {
    get().block_on(f)
}
