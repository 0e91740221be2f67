//! Bounded retries with exponential backoff and full jitter for transient store errors.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use super::Result;

/// Attempts per request before a transient error is returned to the caller (who may retry
/// at a coarser grain, as the shipper does).
pub const ATTEMPTS: u32 = 6;
const BASE: Duration = Duration::from_millis(50);
const CAP: Duration = Duration::from_secs(5);

pub fn backoff(attempt: u32) -> Duration {
    let ceiling = BASE.saturating_mul(1 << attempt.min(16)).min(CAP);
    ceiling.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

pub async fn with_retries<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if e.is_transient() && attempt + 1 < ATTEMPTS => {
                log::debug!("transient storage error, retrying: {e}");
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}
