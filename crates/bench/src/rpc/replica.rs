//! A replica for the hedging runs: `HelloServer` on warren's object server, hosted through
//! warren-objects' library API (the same session, policies and server models as `warren
//! objects serve`), whose servant stalls on a share of its calls, as a replica in a garbage
//! collection, a compaction or behind a noisy neighbour does (The Tail at Scale's causes). The
//! stall lives here, in the bench, so the product's classes stay what they are.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use warren_models::{Model, ServeConfig};
use warren_objects::examples::{HELLO, Hello, HelloSkeleton};
use warren_objects::{Class, Classes, Incarnation, ObjectLimits, ObjectService, ObjectSpec, Objects};

/// The class the replica's `HelloServer` is made of.
const CLASS: &str = "stalling-hello";
/// Calls run on a pool, so a stalled call holds one thread while the others serve the rest: the
/// stall delays that call only, as "stalls 50 ms on 5 % of its calls" says. (Under
/// `per-object`, the default of `warren objects serve`, the calls queued behind it would wait
/// too.) The pool must outnumber the stalls asleep at once, or healthy calls queue behind them
/// and the replica is slow on every call: at 40,000 calls/s over three replicas, 5 % of one's
/// calls stalling 50 ms keep about 35 threads asleep (a hedged stall still sleeps out its 50
/// ms: a paused process does not read its cancels), which 16 threads could not hold.
pub const POLICY: &str = "pool:128:1024";

/// Options of the hidden `warren bench rpc-replica`.
#[derive(Clone, Debug, Args)]
pub struct ReplicaArgs {
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Percent of calls that stall.
    #[arg(long, default_value_t = 0.0)]
    pub stall_percent: f64,
    /// How long a stalled call sleeps before it answers.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "50ms")]
    pub stall: Duration,
    #[arg(long, default_value = "event")]
    pub model: Model,
}

/// `sayHello()` → `"Hello World!"`, late on `percent` of calls.
struct Stalling {
    percent: f64,
    stall: Duration,
}

impl Hello for Stalling {
    fn say_hello(&self) -> String {
        if fastrand::f64() * 100.0 < self.percent {
            // Not cut short by a cancel: a paused process does not read its mail either.
            std::thread::sleep(self.stall);
        }
        "Hello World!".to_owned()
    }
}

struct StallingClass {
    percent: f64,
    stall: Duration,
}

impl Class for StallingClass {
    fn name(&self) -> &'static str {
        CLASS
    }

    fn about(&self) -> &'static str {
        "HelloServer that stalls on a share of its calls (bench only)"
    }

    fn interface(&self) -> &'static warren_rpc::Interface {
        &HELLO
    }

    fn incarnate(&self, _: Option<&[u8]>) -> Result<Incarnation, String> {
        Ok(Incarnation::stateless(HelloSkeleton(Stalling { percent: self.percent, stall: self.stall })))
    }
}

/// `warren bench rpc-replica`: serve the stalling `HelloServer` until killed, announcing the
/// address as `warren objects serve` does.
pub fn serve(args: &ReplicaArgs) -> anyhow::Result<()> {
    anyhow::ensure!((0.0..=100.0).contains(&args.stall_percent), "--stall-percent must be 0 to 100");
    anyhow::ensure!(!matches!(args.model, Model::Fork | Model::Prefork), "objects live in one process");
    let class = StallingClass { percent: args.stall_percent, stall: args.stall };
    let objects = Objects::new(Classes::default().with(class), None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let spec = ObjectSpec { name: "HelloServer".into(), class: CLASS.into(), policy: POLICY.into(), persistent: false };
    objects.add(&spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let listener =
        std::net::TcpListener::bind(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    objects.set_addr(addr.to_string());
    let service = ObjectService::new(objects, ObjectLimits::default());
    warren_models::serve(args.model, service, listener, &ServeConfig::for_model(args.model), || {
        println!(
            "warren: serving HelloServer ({POLICY}, stalls {} on {}% of calls) under {} on {addr}",
            humantime::format_duration(args.stall),
            args.stall_percent,
            args.model
        );
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}
