//! What the agent tests share: a host trusting one key, and guests in WAT.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use warren_agents::{Host, HostConfig, ModuleId, ModuleSignature, SigningKey, Trust};

/// The key the test hosts trust.
pub fn operator() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// A host trusting [`operator`], with `config`'s other settings.
pub fn host_with(config: HostConfig) -> Host {
    let trust = Trust::new().trust_key(operator().verifying_key().to_bytes()).unwrap();
    Host::new(HostConfig { trust, ..config }).unwrap()
}

/// A host trusting [`operator`], otherwise default.
pub fn host() -> Host {
    host_with(HostConfig::default())
}

/// `wat` compiled, signed by [`operator`] and loaded into `host`.
pub fn load(host: &Host, wat: &str) -> ModuleId {
    let bytes = wat::parse_str(wat).unwrap();
    let signature = ModuleSignature::sign(&ModuleId::of(&bytes), &operator());
    host.load(&bytes, Some(&signature)).unwrap()
}

/// Waits up to 10 s for `condition`, checking every millisecond.
pub fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A well-behaved agent: `sum(n)` adds 1..=n in a loop.
pub const SUM: &str = r#"(module
  (func (export "sum") (param $n i64) (result i64) (local $acc i64)
    (block $done (loop $next
      (br_if $done (i64.eqz (local.get $n)))
      (local.set $acc (i64.add (local.get $acc) (local.get $n)))
      (local.set $n (i64.sub (local.get $n) (i64.const 1)))
      (br $next)))
    (local.get $acc)))"#;

/// Loops forever without calling the host.
pub const SPIN: &str = r#"(module (func (export "spin") (loop $forever (br $forever))))"#;
