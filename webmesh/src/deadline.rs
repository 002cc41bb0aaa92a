//! Deadlines that saturate: a timeout too long to represent means no limit.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// When `timeout` from now ends, or `None` when that is too far to
/// represent (e.g. `Duration::MAX`): no limit.
pub(crate) fn after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// `instant + duration`, or far in the future when that overflows.
pub(crate) fn saturating_add(instant: Instant, duration: Duration) -> Instant {
    instant.checked_add(duration).unwrap_or_else(far_future)
}

/// A time that is never reached in practice: about thirty years from now.
pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

/// The deadline passed first.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// Runs `future` until `deadline`; without one, to completion.
pub(crate) async fn until<F: Future>(deadline: Option<Instant>, future: F) -> Result<F::Output, Elapsed> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await.map_err(|_| Elapsed),
        None => Ok(future.await),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn durations_that_mean_no_limit_do_not_overflow() {
        assert!(after(Duration::MAX).is_none());
        assert!(after(Duration::from_secs(1)).is_some());
        assert!(saturating_add(Instant::now(), Duration::MAX) > Instant::now());
        assert_eq!(until(None, async { 5 }).await.unwrap(), 5);
    }
}
