//! Group commit: batches that arrive while another is being written share
//! its successor's transaction, so many small requests pay for one commit
//! (one WAL sync, one audit head update) instead of one each.
//!
//! No writer task: whoever holds the process's write lock drains the queue
//! (the leader); everyone else waits for their answer or for the lock.
//! Consecutive batches of one tenant are decided as one run of events in
//! arrival order, each event against the state the events before it left,
//! and written with one pass of statements: duplicates and daily caps
//! across batches of one group are decided exactly as if the batches had
//! committed one by one, and a group of many single events pays for one
//! set of statements, not one each.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{IngestOutcome, Prepared};
use crate::crypto::Pseudonym;
use crate::store::{Store, StoreError};

/// Events written in one group transaction: a group stays a bounded amount
/// of work and memory, and waiting writers of other kinds (consents,
/// erasures) wait for at most a few batches.
const GROUP_MAX_EVENTS: usize = 4_000;

type Answer = Result<Vec<IngestOutcome>, StoreError>;

pub(super) struct Job {
    pub(super) batch: Prepared,
    reply: oneshot::Sender<Answer>,
}

/// Batches waiting for a leader. Bounded by the server's in-flight slots
/// (each request queues at most one batch of bounded size).
#[derive(Default)]
pub(in crate::store) struct IngestQueue {
    jobs: Mutex<VecDeque<Job>>,
}

impl IngestQueue {
    fn push(&self, job: Job) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).push_back(job);
    }

    /// The next group: queued batches in arrival order up to the size bound
    /// (a larger batch goes alone).
    fn take_group(&self) -> Vec<Job> {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut group = Vec::new();
        let mut events = 0;
        while let Some(next) = jobs.front() {
            let size = next.batch.items.len();
            if !group.is_empty() && events + size > GROUP_MAX_EVENTS {
                break;
            }
            events += size;
            group.extend(jobs.pop_front());
        }
        group
    }
}

impl Store {
    /// Writes `batch` in the next group transaction and returns its
    /// outcomes once that transaction committed.
    pub(super) async fn ingest_grouped(&self, batch: Prepared) -> Answer {
        let (reply, mut answer) = oneshot::channel();
        self.ingest_queue.push(Job { batch, reply });
        loop {
            tokio::select! {
                biased;
                // A leader wrote this batch (or failed to).
                done = &mut answer => return done.unwrap_or(Err(StoreError::OutcomeUnknown)),
                held = self.write_lock.lock() => {
                    let group = self.ingest_queue.take_group();
                    if !group.is_empty() {
                        self.write_group(&held, group).await;
                    }
                    // Either this batch was in a group written under the
                    // lock (answered), or it waits for the next leader.
                }
            }
        }
    }

    /// Writes a group in one transaction. If a batch fails, the group is
    /// rolled back and each batch is written alone, so a batch is answered
    /// with its own error, never another's. If the commit fails, every
    /// batch of the group is answered `OutcomeUnknown`.
    async fn write_group(&self, held: &tokio::sync::MutexGuard<'_, ()>, group: Vec<Job>) {
        if group.len() > 1 {
            match self.try_group(held, &group).await {
                Ok(answers) => {
                    for (job, answer) in group.into_iter().zip(answers) {
                        // The requester may be gone: what committed stays.
                        let _ = job.reply.send(Ok(answer));
                    }
                    return;
                }
                Err(StoreError::OutcomeUnknown) => {
                    for job in group {
                        let _ = job.reply.send(Err(StoreError::OutcomeUnknown));
                    }
                    return;
                }
                // Batch by batch would only fail again, each after a wait.
                Err(e) if e.is_unavailable() => {
                    for job in group {
                        let _ = job.reply.send(Err(StoreError::Unavailable));
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, batches = group.len(), "a group write failed; writing its batches one by one")
                }
            }
        }
        for job in group {
            let answer = self
                .try_group(held, std::slice::from_ref(&job))
                .await
                .map(|mut a| a.remove(0));
            let _ = job.reply.send(answer);
        }
    }

    async fn try_group(
        &self,
        held: &tokio::sync::MutexGuard<'_, ()>,
        group: &[Job],
    ) -> Result<Vec<Vec<IngestOutcome>>, StoreError> {
        let mut w = self.begin_write_held(held, self.today()).await?;
        let mut answers = Vec::with_capacity(group.len());
        for run in runs(group) {
            let batches: Vec<&Prepared> = run.iter().map(|job| &job.batch).collect();
            match self.write_batches(&mut w, &batches).await {
                Ok(run_answers) => answers.extend(run_answers),
                Err(e) => {
                    // Explicitly, so the connection returns to the pool
                    // outside a transaction.
                    let _ = w.rollback().await;
                    return Err(e);
                }
            }
        }
        // A failed commit may or may not have committed: nobody is told
        // either way, and a retry is safe (events are idempotent by id).
        w.commit().await.map_err(|e| {
            tracing::error!(error = %e, "committing a group of batches failed; its outcome is unknown");
            StoreError::OutcomeUnknown
        })?;
        Ok(answers)
    }
}

/// The group cut into runs written as one: consecutive batches of one
/// tenant that found the same key (or none) for each person they share.
/// Each batch read its people's keys before it queued; a first consent or
/// an erasure in between can make two batches see one person differently,
/// and they are then decided apart, as they would have been one by one.
fn runs(group: &[Job]) -> Vec<&[Job]> {
    let mut runs = Vec::new();
    let mut start = 0;
    // Each person's key as the run's batches found it (`None`: no key).
    let mut keys: HashMap<&Pseudonym, Option<&[u8]>> = HashMap::new();
    for (i, job) in group.iter().enumerate() {
        let found: Vec<(&Pseudonym, Option<&[u8]>)> = job
            .batch
            .items
            .iter()
            .map(|(p, _, _)| (p, job.batch.stored.get(p).map(|k| k.key_id.as_slice())))
            .collect();
        let tenant_changes = group[start].batch.tenant != job.batch.tenant;
        let keys_differ = found.iter().any(|(p, id)| keys.get(p).is_some_and(|seen| seen != id));
        if i > start && (tenant_changes || keys_differ) {
            runs.push(&group[start..i]);
            start = i;
            keys.clear();
        }
        keys.extend(found);
    }
    if start < group.len() {
        runs.push(&group[start..]);
    }
    runs
}
