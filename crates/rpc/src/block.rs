//! Waiting for a call from code that is not async: an object's method calling back a client
//! (the course's `WorkListener`) runs on its policy's thread, outside any runtime.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;

struct Unpark(Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Run `future` to its end on this thread, parking while it waits. For futures that need no
/// runtime of their own: a call through a stub whose caller is the server's connection back to
/// the client. (A [`Connection`](crate::Connection) needs tokio: use its runtime's `block_on`.)
pub fn block_on<F: Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_future_completed_from_another_thread_is_awaited() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = std::thread::spawn(move || tx.send(42).unwrap());
        assert_eq!(super::block_on(rx).unwrap(), 42);
        sender.join().unwrap();
    }
}
