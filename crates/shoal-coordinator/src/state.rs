//! The coordinator's shared state: registered workers, live runs, and
//! the lock that guards them (never held across an await).

use super::*;

/// A registered worker, by its `worker_id` (a UUID per process): the name
/// identifies nothing, several workers may register with the same one.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) index: u32,
    /// Slots it announced (0 until it registers after a restart).
    pub(crate) slots: u32,
    /// The name it registered with.
    pub(crate) name: String,
    /// The name it is shown under: `name`, or `name#2`, ... when another
    /// live worker already showed under `name` (see [`display_name`]).
    pub(crate) display: String,
    /// Its last register, heartbeat or lease call.
    pub(crate) last_seen: Instant,
}

/// The name a worker registering as `name` is shown under: the first of
/// `name`, `name#2`, `name#3`, ... that no *other* live worker (seen within
/// `live`) is shown under. Never a refusal: a worker restarted after a kill
/// registers (with a new id) while its old registration still looks live,
/// and must be accepted.
pub(crate) fn display_name(
    workers: &HashMap<String, Worker>,
    worker_id: &str,
    name: &str,
    now: Instant,
    live: Duration,
) -> String {
    let shown: std::collections::HashSet<&str> = workers
        .iter()
        .filter(|(id, w)| id.as_str() != worker_id && now.duration_since(w.last_seen) <= live)
        .map(|(_, w)| w.display.as_str())
        .collect();
    std::iter::once(name.to_owned())
        .chain((2..).map(|n| format!("{name}#{n}")))
        .find(|candidate| !shown.contains(candidate.as_str()))
        .unwrap_or_else(|| name.to_owned())
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) runs: HashMap<String, Run>,
    /// Submission order, for tie-breaking between runs.
    pub(crate) order: Vec<String>,
    pub(crate) workers: HashMap<String, Worker>,
    pub(crate) next_worker: u32,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) blobs: BlobStore,
    pub(crate) lease_timeout: Duration,
    pub(crate) max_requeues: u32,
    pub(crate) clock: Arc<dyn run::Clock>,
    pub(crate) incarnation: String,
    pub(crate) inner: Mutex<Inner>,
    /// Wakes long-polling lease requests: work was added or freed.
    pub(crate) work: Notify,
    /// Ends event streams when the coordinator stops.
    pub(crate) shutdown: CancellationToken,
    /// The one writer: attempts of concurrent reports share a transaction.
    pub(crate) writer: tokio::sync::mpsc::UnboundedSender<Write>,
    pub(crate) _lock: CoordinatorLock,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}
