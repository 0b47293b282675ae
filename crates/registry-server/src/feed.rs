//! Every watch of one connection, waited on together by one job.
//!
//! A write seen by 10,000 watchers on 200 connections costs 200 job completions, 200 turns of
//! the connections' engines and 200 sends, not 10,000 of each: a connection's watches wait in
//! one [`FuturesUnordered`] (a woken watch is polled, the others are not), and when one has
//! events the job also takes those of every other watch that has some already, so the session
//! queues all of their frames before the engine writes them out in one send.
//!
//! The session owns the [`Feed`] between jobs and gives it to the next one; watches that start
//! meanwhile, and watches going on after their events, join it through a channel, so that one
//! can join while the job runs. Each waiting watch can be cancelled on its own (an
//! [`AbortHandle`]): it then ends at once and is dropped by the feed.

use std::future::poll_fn;
use std::task::Poll;

use futures_util::future::{AbortHandle, Abortable, BoxFuture, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use warren_registry::backend::Watch;
use warren_registry::model::{Error, Event};

/// Watch `id`'s next events (or why it ended), and the watch to go on with.
pub struct Next {
    pub id: u32,
    pub events: Result<Vec<Event>, Error>,
    pub watch: Option<Box<dyn Watch>>,
}

/// A watch waiting for its next events; `None` if it was cancelled.
type Waiting = BoxFuture<'static, Option<Next>>;

/// The waiting watches of one connection.
pub struct Feed {
    waiting: FuturesUnordered<Waiting>,
    joining: mpsc::UnboundedReceiver<Waiting>,
}

/// Where watches join a [`Feed`], running or not.
#[derive(Clone)]
pub struct Joiner(mpsc::UnboundedSender<Waiting>);

/// A new feed with nothing waiting, and where watches join it.
pub fn feed() -> (Feed, Joiner) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Feed { waiting: FuturesUnordered::new(), joining: rx }, Joiner(tx))
}

impl Joiner {
    /// Adds a watch waiting for `next`; the handle cancels it.
    pub fn join(&self, next: impl Future<Output = Next> + Send + 'static) -> AbortHandle {
        let (handle, registration) = AbortHandle::new_pair();
        let waiting = Abortable::new(next, registration).map(Result::ok).boxed();
        // The feed lives as long as the session that holds this joiner: a send cannot fail
        // while anyone could still take what it sends.
        let _ = self.0.send(waiting);
        handle
    }
}

impl Feed {
    /// Waits until a watch has events, then takes those of every other watch that has some
    /// without waiting; gives the feed back with them.
    pub async fn next(mut self) -> (Vec<Next>, Feed) {
        let first = poll_fn(|cx| {
            while let Poll::Ready(Some(waiting)) = self.joining.poll_recv(cx) {
                self.waiting.push(waiting);
            }
            loop {
                match self.waiting.poll_next_unpin(cx) {
                    Poll::Ready(Some(Some(next))) => return Poll::Ready(next),
                    Poll::Ready(Some(None)) => continue, // cancelled
                    // Empty: the joining channel's waker wakes this job for the next watch.
                    Poll::Ready(None) | Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await;
        let mut ready = vec![first];
        loop {
            match self.waiting.next().now_or_never() {
                Some(Some(Some(next))) => ready.push(next),
                Some(Some(None)) => {}
                Some(None) | None => break,
            }
        }
        (ready, self)
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").field("id", &self.id).field("events", &self.events).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("waiting", &self.waiting.len()).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Joiner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Joiner")
    }
}
