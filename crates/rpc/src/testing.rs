//! A minimal server for tests of clients and middleware (feature `testing`): one tokio task per
//! connection, each call on a blocking thread through [`invoke`](crate::client::invoke). No
//! activation policies, no cancellation, no callbacks: the object server proper, on the spine,
//! is `warren-objects`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::wire::{self, Frame, Reply};
use crate::{Context, Dispatch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// Objects by name.
pub type Objects = Arc<HashMap<String, Arc<dyn Dispatch>>>;

/// Serve `objects` on a loopback port until the runtime ends; returns the address.
pub async fn serve(objects: Objects) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let objects = objects.clone();
            tokio::spawn(async move {
                let (mut read, mut write) = socket.into_split();
                let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
                tokio::spawn(async move {
                    while let Some(bytes) = rx.recv().await {
                        if write.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                });
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
                        let Frame::Call(call) = frame else { continue };
                        let (objects, tx) = (objects.clone(), tx.clone());
                        tokio::task::spawn_blocking(move || {
                            let deadline = (call.timeout_ms > 0)
                                .then(|| Instant::now() + Duration::from_millis(call.timeout_ms.into()));
                            let ctx = Context::new(deadline, Arc::new(AtomicBool::new(false)));
                            let object = objects.get(&call.object).cloned();
                            let outcome = crate::client::invoke(object.as_deref(), &ctx, &call);
                            let mut bytes = Vec::new();
                            wire::encode(&Frame::Reply(Reply { id: call.id, outcome }), &mut bytes).unwrap();
                            let _ = tx.blocking_send(bytes);
                        });
                    }
                }
            });
        }
    });
    addr
}
