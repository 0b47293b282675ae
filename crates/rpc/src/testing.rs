//! A minimal server for tests of clients and middleware (feature `testing`): one tokio task per
//! connection, each call on a blocking thread through [`invoke`](crate::client::invoke), a
//! `Cancel` heard by its call. No activation policies and no callbacks: the object server
//! proper, on the spine, is `warren-objects`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

use crate::wire::{self, Frame, Reply};
use crate::{Context, Dispatch};

/// Objects by name.
pub type Objects = Arc<HashMap<String, Arc<dyn Dispatch>>>;

/// Serve `objects` on a loopback port until the runtime ends; returns the address.
pub async fn serve(objects: Objects) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve_connection(socket, objects.clone()));
        }
    });
    addr
}

/// Serve one connection: each call on a blocking thread, `Cancel` setting its call's flag.
/// Aborting the task closes the connection, as a killed server's would.
pub async fn serve_connection(socket: tokio::net::TcpStream, objects: Objects) {
    let (mut read, mut write) = socket.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let (_stop_writer, writer_stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            _ = async { while let Some(bytes) = rx.recv().await { if write.write_all(&bytes).await.is_err() { break; } } } => {}
            // Aborting the reader drops `_stop_writer`: the writer goes too, closing the socket.
            _ = writer_stopped => {}
        }
    });
    let calls: Arc<Mutex<HashMap<u64, Arc<AtomicBool>>>> = Arc::default();
    let mut input = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = match read.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        input.extend_from_slice(&chunk[..n]);
        while let Ok(Some((frame, used))) = wire::decode(&input) {
            input.drain(..used);
            let call = match frame {
                Frame::Call(call) => call,
                Frame::Cancel(id) => {
                    if let Some(flag) = calls.lock().unwrap().remove(&id) {
                        flag.store(true, Ordering::SeqCst);
                    }
                    continue;
                }
                Frame::Reply(_) | Frame::Auth(_) => continue,
            };
            let cancelled = Arc::new(AtomicBool::new(false));
            calls.lock().unwrap().insert(call.id, cancelled.clone());
            let (objects, tx, calls) = (objects.clone(), tx.clone(), calls.clone());
            tokio::task::spawn_blocking(move || {
                let deadline =
                    (call.timeout_ms > 0).then(|| Instant::now() + Duration::from_millis(call.timeout_ms.into()));
                let ctx = Context::new(deadline, cancelled);
                let outcome = crate::client::invoke(objects.get(&call.object).map(|o| &**o), &ctx, &call);
                calls.lock().unwrap().remove(&call.id);
                let mut bytes = Vec::new();
                wire::encode(&Frame::Reply(Reply { id: call.id, outcome }), &mut bytes).unwrap();
                let _ = tx.blocking_send(bytes);
            });
        }
    }
}
