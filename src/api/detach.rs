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
//! shutdown waits for every slot to come back.

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

/// How long a request waits for a slot before it is refused.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// The slots of work in flight.
#[derive(Debug)]
pub struct InFlight {
    slots: Arc<Semaphore>,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize)),
        }
    }
}

impl InFlight {
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
    let slot = match tokio::time::timeout(SLOT_WAIT, work.slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => Slot(Arc::new(slot)),
        // Closed (only after shutdown drained every request) or still taken.
        Ok(Err(_)) | Err(_) => return ApiError::Overloaded.into_response(),
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
