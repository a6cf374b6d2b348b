//! A request's work runs to its end whatever its client does (invariant 9).
//!
//! hyper drops a handler's future when its client resets the connection.
//! Dropped between two awaits, a handler could leave a transaction open or
//! a multi-step change half done for the next request to trip over. So
//! every request runs in a task of its own, which the connection merely
//! waits for: a client that hangs up loses its response, never its
//! transaction's ending. Because a hung-up client no longer sheds its
//! work, that work is bounded: a request waits a moment for one of
//! `MAX_IN_FLIGHT` slots and is refused with 503 when none frees up, and
//! shutdown waits for every slot to come back. The wait is bounded too: past
//! `MAX_WAITING` requests waiting, more are refused at once, so an overload
//! sheds load instead of piling up connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// Requests whose work may run at once. Bodies are at most 2 MiB, so this
/// bounds request memory to about 128 MiB; the database pools bound the
/// rest.
pub const MAX_IN_FLIGHT: u32 = 64;

/// Requests that may wait for a slot at once; more are refused at once.
pub const MAX_WAITING: usize = 256;

/// How long a request waits for a slot before it is refused.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// The slots of work in flight.
#[derive(Debug)]
pub struct InFlight {
    slots: Arc<Semaphore>,
    /// Places in the queue for a slot.
    waiting: Semaphore,
    wait: Duration,
    /// Requests refused with 503 so far.
    shed: AtomicU64,
}

impl Default for InFlight {
    fn default() -> Self {
        Self::new(MAX_WAITING, SLOT_WAIT)
    }
}

impl InFlight {
    /// `MAX_IN_FLIGHT` slots, `waiting` places to wait for one, each wait at
    /// most `wait`.
    pub fn new(waiting: usize, wait: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize)),
            waiting: Semaphore::new(waiting),
            wait,
            shed: AtomicU64::new(0),
        }
    }

    /// Slots taken now.
    pub fn in_use(&self) -> usize {
        (MAX_IN_FLIGHT as usize).saturating_sub(self.slots.available_permits())
    }

    /// Requests refused with 503 since start.
    pub fn shed_count(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// A slot, or `None` when the queue is full, the wait runs out or the
    /// server is draining.
    async fn admit(&self) -> Option<OwnedSemaphorePermit> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(tokio::sync::TryAcquireError::Closed) => None,
            Err(tokio::sync::TryAcquireError::NoPermits) => match self.waiting.try_acquire() {
                Ok(_place) => match tokio::time::timeout(self.wait, self.slots.clone().acquire_owned()).await {
                    Ok(Ok(slot)) => Some(slot),
                    Ok(Err(_)) | Err(_) => None,
                },
                Err(_) => None,
            },
        };
        if slot.is_none() {
            self.shed.fetch_add(1, Ordering::Relaxed);
        }
        slot
    }

    /// Waits until no request's work is under way.
    pub async fn idle(&self) {
        let _all = self.slots.acquire_many(MAX_IN_FLIGHT).await;
    }

    /// Waits until every request's work has ended, and admits no more.
    pub async fn drain(&self) {
        if let Ok(all) = self.slots.acquire_many(MAX_IN_FLIGHT).await {
            all.forget();
        }
        self.slots.close();
    }
}

/// A request's slot, in its extensions: work that outlives the handler (an
/// export's streaming) keeps a clone, so the slot is free only when all of
/// the request's work is done.
#[derive(Clone, Debug)]
pub struct Slot(#[allow(dead_code)] Arc<OwnedSemaphorePermit>);

pub(super) async fn detach(State(work): State<Arc<InFlight>>, mut request: Request, next: Next) -> Response {
    // Waiting for a slot touches nothing shared: dropping it here is safe.
    let slot = match work.admit().await {
        Some(slot) => Slot(Arc::new(slot)),
        // Queue full, still taken, or closed (after shutdown drained).
        None => return ApiError::Overloaded.into_response(),
    };
    request.extensions_mut().insert(slot.clone());
    let task = tokio::spawn(async move {
        let response = next.run(request).await;
        drop(slot);
        response
    });
    match task.await {
        Ok(response) => response,
        // A panic inside the task; `catch_panic` turns those into problems
        // first, so this is a last resort.
        Err(_) => ApiError::Internal("request task failed".into()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With every slot taken, the queue holds at most its places: the rest
    /// are refused at once, and every refusal is counted.
    #[tokio::test]
    async fn a_full_queue_sheds_at_once() {
        let work = Arc::new(InFlight::new(2, Duration::from_secs(5)));
        let held = work.slots.clone().acquire_many_owned(MAX_IN_FLIGHT).await.unwrap();
        assert_eq!(work.in_use(), MAX_IN_FLIGHT as usize);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let work = work.clone();
                tokio::spawn(async move { work.admit().await.is_some() })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        assert!(work.admit().await.is_none(), "a third waiter is refused");
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "refused without waiting"
        );
        drop(held);
        for w in waiters {
            assert!(w.await.unwrap(), "the queued requests get their slots");
        }
        assert_eq!(work.shed_count(), 1);
    }
}
