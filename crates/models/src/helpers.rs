//! Where jobs run (`warren_proto::effect`).
//!
//! - [`run_here`]: on the calling thread, which waits for the result. The thread-based models
//!   (`iterative`, `thread`, `pool`, `fork`, `prefork`) run every job so: a slow disk stalls one
//!   connection's thread, as a blocking call does in those designs. With no helper threads,
//!   `event`, `green` and `hybrid` do too, and then every connection waits: the chapter's lesson.
//! - [`Helpers`]: a bounded pool of helper threads for the loop-based models, as nginx's
//!   `aio threads` pools take blocking file I/O off its event loop. The loop keeps all socket
//!   I/O; helpers only wait. A job's result goes to a callback that wakes the loop.
//!
//! A future job is polled on a tokio runtime: the caller's own under `green` and `hybrid`, else
//! one runtime per process with a single thread, started at the first future (after any fork).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;

use tokio::runtime::Runtime;
use tokio::task::AbortHandle;
use warren_proto::Job;

use crate::local_hub::lock;

type Task = Box<dyn FnOnce() + Send>;

/// Run `job` on this thread and return its result.
pub(crate) fn run_here<D>(job: Job<D>) -> D {
    match job {
        Job::Blocking(call) => call(),
        Job::Future(future) => futures_runtime().block_on(future),
    }
}

/// The runtime future jobs run on outside `green` and `hybrid`.
pub(crate) fn futures_runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("warren-futures")
            .enable_all()
            .build()
            .expect("a tokio runtime for future jobs")
    })
}

/// Spawn `future` on `runtime` (the caller's, or [`futures_runtime`]) and hand its output to
/// `done`; the handle aborts it.
pub(crate) fn spawn_future<D: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    future: impl Future<Output = D> + Send + 'static,
    done: impl FnOnce(D) + Send + 'static,
) -> AbortHandle {
    runtime.spawn(async move { done(future.await) }).abort_handle()
}

/// A fixed pool of threads that run blocking jobs.
pub(crate) struct Helpers {
    tasks: Option<mpsc::Sender<Task>>,
    threads: Vec<JoinHandle<()>>,
    /// Once set, tasks not started yet are dropped: whoever waited for them is gone.
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Helpers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Helpers").field("threads", &self.threads.len()).finish()
    }
}

impl Helpers {
    /// `n` helper threads (at least one).
    pub(crate) fn new(n: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n.max(1))
            .map(|_| {
                let (rx, stop) = (rx.clone(), stop.clone());
                std::thread::Builder::new().name("warren-helper".into()).spawn(move || {
                    loop {
                        // One statement, so that the lock is not held while the task runs.
                        let task = lock(&rx).recv();
                        let Ok(task) = task else { return };
                        if !stop.load(Ordering::SeqCst) {
                            task();
                        }
                    }
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Self { tasks: Some(tx), threads, stop })
    }

    /// Run `job` off the calling thread and hand its result to `done` (on the helper thread,
    /// or the futures runtime's). Returns a handle that aborts a future job.
    pub(crate) fn run<D: Send + 'static>(
        &self,
        job: Job<D>,
        done: impl FnOnce(D) + Send + 'static,
    ) -> Option<AbortHandle> {
        match job {
            Job::Blocking(call) => {
                let task: Task = Box::new(move || done(call()));
                if let Some(tasks) = &self.tasks {
                    // The threads outlive the sender; a send fails only after `drop`.
                    let _ = tasks.send(task);
                }
                None
            }
            Job::Future(future) => Some(spawn_future(futures_runtime().handle(), future, done)),
        }
    }
}

impl Drop for Helpers {
    /// Tasks not started are dropped; those running are waited for.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(self.tasks.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn jobs_run_here_or_on_helpers() {
        assert_eq!(run_here(Job::blocking(|| 2 + 2)), 4);
        assert_eq!(run_here(Job::future(async { 5 })), 5);
        let helpers = Helpers::new(2).unwrap();
        let (tx, rx) = mpsc::channel();
        let caller = std::thread::current().id();
        let tx2 = tx.clone();
        helpers.run(Job::blocking(move || std::thread::current().id()), move |id| tx.send(id != caller).unwrap());
        helpers.run(Job::future(async { 7 }), move |n| tx2.send(n == 7).unwrap());
        for _ in 0..2 {
            assert!(rx.recv_timeout(Duration::from_secs(10)).unwrap());
        }
    }
}
