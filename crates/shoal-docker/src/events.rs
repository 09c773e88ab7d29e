//! A container's engine events, followed from its creation: kernel OOM kills
//! (counted) and the deaths of exec'd processes (awaited by the executor).
//!
//! Docker 20.10 sets `State.OOMKilled` only when the container's main process
//! dies; an exec'd test process killed by the OOM killer shows up only as an
//! `oom` event. The engine emits that event before the `exec_die` of the
//! process that hit the limit, so once an exec's `exec_die` has been seen its
//! OOM kills are counted.

use bollard::Docker;
use bollard::query_parameters::EventsOptions;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

type Waiters = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// Follows one container's events until dropped.
#[derive(Debug)]
pub(crate) struct EventWatcher {
    oom_kills: Arc<AtomicU64>,
    exec_waiters: Waiters,
    task: JoinHandle<()>,
}

impl EventWatcher {
    /// Follows `container`'s events, replaying them from `since` (unix
    /// seconds), so that nothing after the container's creation is missed.
    pub(crate) fn start(docker: &Docker, container: &str, since: u64) -> Self {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("container".to_owned(), vec![container.to_owned()]),
            (
                "event".to_owned(),
                vec!["oom".to_owned(), "exec_die".to_owned()],
            ),
        ]);
        let options = EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        };
        let oom_kills = Arc::new(AtomicU64::new(0));
        let exec_waiters = Waiters::default();
        let mut events = docker.events(Some(options));
        let (oom, waiters) = (Arc::clone(&oom_kills), Arc::clone(&exec_waiters));
        let container = container.to_owned();
        let task = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => {
                        tracing::debug!(%container, "stopped following container events: {e}");
                        break;
                    }
                };
                match event.action.as_deref() {
                    Some("oom") => {
                        oom.fetch_add(1, Ordering::SeqCst);
                    }
                    Some(action) if action.starts_with("exec_die") => {
                        let exec_id = event
                            .actor
                            .and_then(|a| a.attributes)
                            .and_then(|mut attrs| attrs.remove("execID"));
                        if let Some(id) = exec_id {
                            let waiter = lock(&waiters).remove(&id);
                            if let Some(waiter) = waiter {
                                let _ = waiter.send(());
                            }
                        }
                    }
                    _ => {}
                }
            }
            // Nobody will be told any more: let waiters go at once.
            lock(&waiters).clear();
        });
        EventWatcher {
            oom_kills,
            exec_waiters,
            task,
        }
    }

    /// OOM kills seen so far in the container.
    pub(crate) fn oom_kills(&self) -> u64 {
        self.oom_kills.load(Ordering::SeqCst)
    }

    /// Resolves (or errors, if events stop) once exec `exec_id` has died.
    /// Call before starting the exec.
    pub(crate) fn exec_died(&self, exec_id: &str) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if !self.task.is_finished() {
            lock(&self.exec_waiters).insert(exec_id.to_owned(), tx);
        }
        rx
    }

    /// Forgets a waiter whose exec never started.
    pub(crate) fn forget(&self, exec_id: &str) {
        lock(&self.exec_waiters).remove(exec_id);
    }
}

impl Drop for EventWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
