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

/// Runs a background task, starting it again (after `pause`) whenever it panics: a bug in
/// one pass must not silently stop replication for the life of the process. `report` is told
/// each panic's message; a task that returns is done.
pub fn supervise<T, Fut>(
    name: &'static str,
    pause: std::time::Duration,
    report: impl Fn(String) + Send + 'static,
    task: T,
) where
    T: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    get().spawn(async move {
        loop {
            match get().spawn(task()).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    let payload = e.into_panic();
                    let msg = payload
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| payload.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic".into());
                    log::error!("the {name} task failed ({msg}); starting it again");
                    report(format!(
                        "the {name} task failed ({msg}) and was started again"
                    ));
                    tokio::time::sleep(pause).await;
                }
                Err(_) => return, // cancelled: the runtime is going away
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    #[test]
    fn a_task_that_panics_is_started_again_and_reported() {
        let runs = Arc::new(AtomicUsize::new(0));
        let reports = Arc::new(Mutex::new(Vec::new()));
        let (r2, rep2) = (runs.clone(), reports.clone());
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        super::supervise(
            "test",
            Duration::from_millis(1),
            move |m| rep2.lock().unwrap().push(m),
            move || {
                let (runs, done) = (r2.clone(), done_tx.clone());
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) < 2 {
                        panic!("boom");
                    }
                    done.send(()).unwrap();
                }
            },
        );
        done_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the task ran to completion");
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let reports = reports.lock().unwrap();
        assert_eq!(reports.len(), 2);
        assert!(reports[0].contains("boom"), "{reports:?}");
    }
}
