//! `warren register NAME ADDR --ttl S`: keeps an endpoint registered for as long as it runs.
//!
//! It renews at TTL/3, so two renewals in a row may fail (or be late) before the lease lapses.
//! A broken connection is made again and the same lease renewed; only a lease that is gone
//! (lapsed, or lost by the registry) is registered again. On SIGINT or SIGTERM it releases the
//! lease, so the endpoint goes at once rather than a TTL later. `warren up` keeps each hosted
//! service registered through the same loop ([`keep`]).

use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use warren_registry::backend::Lease;
use warren_registry::client::Client;
use warren_registry::{Endpoint, Error, Name};

use crate::registry_cmd::{Conn, RegisterArgs, check_reachable};

pub async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    check_reachable(args.addr)?;
    let name = Name::new(args.name.clone())?;
    let token = args.conn.token()?;
    let endpoint = args.endpoint.endpoint(args.addr);
    let (mut term, mut int) = (signal(SignalKind::terminate())?, signal(SignalKind::interrupt())?);
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    // The first registration must work: a refusal (owned name, bad TTL) is the user's to fix.
    keep(&args.conn, &name, &token, fixed(endpoint), args.ttl, stop, false).await
}

/// An endpoint that never changes, for [`keep`].
pub fn fixed(endpoint: Endpoint) -> watch::Receiver<Endpoint> {
    watch::channel(endpoint).1
}

/// Keeps `endpoint` registered under `name` until `stop`, then releases the lease, so that it
/// goes at once rather than a TTL later. Each change of `endpoint` (a node's load in its
/// metadata) is registered at once under a new lease and the old lease then released: the new
/// registration takes the endpoint over from the old lease (in the embedded store as in etcd,
/// where a key belongs to the lease of its last put), so the release removes nothing and the
/// endpoint never leaves the registry. `patient`: a failing first registration is retried
/// like a later one (the node's services, whose registry may not be up yet) instead of returned.
pub async fn keep(
    conn: &Conn,
    name: &Name,
    token: &str,
    mut endpoint: watch::Receiver<Endpoint>,
    ttl: Duration,
    stop: impl Future<Output = ()>,
    patient: bool,
) -> anyhow::Result<()> {
    let current = |e: &watch::Receiver<Endpoint>| e.borrow().clone();
    let first = async {
        let client = conn.connect().await?;
        attempt(conn, client, name, token, &current(&endpoint), ttl).await
    };
    let mut held = match first.await {
        Ok(held) => Some(held),
        Err(e) if patient => {
            eprintln!("warren: registering {name}: {e:#}; trying again");
            None
        }
        Err(e) => return Err(e),
    };
    tokio::pin!(stop);
    // While unregistered, try again after 250 ms, doubling up to a third of the TTL, so that a
    // registry that is down is neither hammered nor waited for long once it is back.
    let mut retry = Duration::from_millis(250).min(ttl / 3);
    // Whether `endpoint` may still change: once its sender is gone it never will.
    let mut changing = true;
    loop {
        let pause = match held {
            Some(_) => ttl / 3,
            None => {
                let now = retry;
                retry = (retry * 2).min(ttl / 3);
                now
            }
        };
        let mut changed = false;
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut stop => break,
            moved = endpoint.changed(), if changing => match moved {
                Ok(()) => changed = true,
                Err(_) => {
                    changing = false;
                    continue;
                }
            },
        }
        let now = current(&endpoint);
        let kept = match held.take() {
            Some(held) if changed => replace(conn, held, name, token, &now, ttl).await,
            Some(held) => renew(conn, held, name, token, &now, ttl).await,
            None => match conn.connect().await {
                Ok(client) => attempt(conn, client, name, token, &now, ttl).await,
                Err(e) => Err(e),
            },
        };
        held = kept.inspect_err(|e| eprintln!("warren: {name}: {e:#}; trying again")).ok();
        if held.is_some() {
            retry = Duration::from_millis(250).min(ttl / 3);
        }
    }
    if let Some((client, lease)) = held {
        conn.ask(client.release(lease.id, token)).await.context("releasing the lease")?;
        println!("released {name} (lease {})", lease.id);
    }
    Ok(())
}

/// Renews the lease, over a new connection if the old one broke (the server closes idle ones);
/// registers again only if the lease itself is gone (it lapsed, or the registry lost it).
async fn renew(
    conn: &Conn,
    (client, lease): (Client, Lease),
    name: &Name,
    token: &str,
    endpoint: &Endpoint,
    ttl: Duration,
) -> anyhow::Result<(Client, Lease)> {
    let gone = |e: &anyhow::Error| matches!(e.downcast_ref(), Some(Error::LeaseNotFound(_)));
    let client = match conn.ask(client.renew(lease.id, token)).await {
        Ok(_) => return Ok((client, lease)),
        Err(e) if gone(&e) => client,
        Err(e) => {
            eprintln!("warren: renewing lease {}: {e:#}; reconnecting", lease.id);
            let client = conn.connect().await?;
            match conn.ask(client.renew(lease.id, token)).await {
                Ok(_) => return Ok((client, lease)),
                Err(e) if gone(&e) => client,
                Err(e) => return Err(e),
            }
        }
    };
    eprintln!("warren: lease {} is gone; registering again", lease.id);
    attempt(conn, client, name, token, endpoint, ttl).await
}

/// Registers the changed `endpoint` under a new lease, then releases the old one, which no
/// longer holds it (see [`keep`]).
async fn replace(
    conn: &Conn,
    (client, old): (Client, Lease),
    name: &Name,
    token: &str,
    endpoint: &Endpoint,
    ttl: Duration,
) -> anyhow::Result<(Client, Lease)> {
    let (client, lease) = match attempt(conn, client, name, token, endpoint, ttl).await {
        Ok(held) => held,
        // Over a new connection if the old one broke (the server closes idle ones).
        Err(_) => attempt(conn, conn.connect().await?, name, token, endpoint, ttl).await?,
    };
    if let Err(e) = conn.ask(client.release(old.id, token)).await {
        eprintln!("warren: {name}: releasing the replaced lease {}: {e:#}; it lapses after its TTL", old.id);
    }
    Ok((client, lease))
}

async fn attempt(
    conn: &Conn,
    client: Client,
    name: &Name,
    token: &str,
    endpoint: &Endpoint,
    ttl: Duration,
) -> anyhow::Result<(Client, Lease)> {
    let lease = conn.ask(client.register(name, token, endpoint.clone(), ttl)).await?;
    println!("registered {name} {endpoint} (lease {}, ttl {})", lease.id, humantime::format_duration(lease.ttl));
    Ok((client, lease))
}
