//! `builtin = "switch"` in `warren.toml`: the node hosts the cluster switch through
//! [`warren_node::Hooks::host`], as it hosts the registry, since the switch's code lives in this
//! crate. The service's keys are `warren switch`'s flags with `_` for `-` (`backend`,
//! `policy`, `mode`, `inter`, …), read by the same parser, so the two take the same options
//! and refuse the same mistakes; the node's `port` and `bind` are its `--listen`.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, bail};
use clap::Parser;
use warren_models::Shutdown;
use warren_node::Config;
use warren_node::config::{Builtin, Kind, Protocol, Service};

use crate::switch_cmd::{SwitchArgs, Until};

/// `warren switch`'s flags, parsed from a service's keys.
#[derive(Debug, Parser)]
#[command(no_binary_name = true)]
struct Keys {
    #[command(flatten)]
    args: SwitchArgs,
}

/// The `warren switch` flags one key stands for: `--key=word` per word, and `no_check` a flag.
fn flags(key: &str, words: &[String]) -> anyhow::Result<Vec<String>> {
    let flag = format!("--{}", key.replace('_', "-"));
    if key == "no_check" {
        return match words {
            [yes] if yes == "yes" => Ok(vec![flag]),
            [no] if no == "no" => Ok(Vec::new()),
            _ => bail!("{key}: want true or false"),
        };
    }
    Ok(words.iter().map(|word| format!("{flag}={word}")).collect())
}

/// The switch a `builtin = "switch"` describes. Each key is parsed alone first, so that a bad
/// value is reported under the key's name; then all together, and checked as a whole.
fn args(builtin: &Builtin) -> anyhow::Result<SwitchArgs> {
    let mut all = Vec::new();
    for (key, words) in &builtin.options.switch {
        let argv = flags(key, words)?;
        if let Err(e) = Keys::try_parse_from(&argv) {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or_default().trim_start_matches("error: ");
            bail!("{key}: {first}");
        }
        all.extend(argv);
    }
    let args = Keys::try_parse_from(&all).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?.args;
    crate::switch_cmd::check(&args)?;
    Ok(args)
}

/// How a switch serves, for the node's readiness line: `switch (MODE, POLICY)`.
pub fn describe(builtin: &Builtin) -> String {
    match args(builtin) {
        Ok(args) => format!("switch ({}, {})", args.mode, args.policy),
        Err(_) => "switch".to_owned(),
    }
}

/// Checks every switch of `config` as the file loads (at the start and on each reload), so that
/// a mistake stops the start or refuses the reload instead of leaving the service unserved.
pub fn check(config: &Config) -> anyhow::Result<()> {
    for service in &config.services {
        if let Kind::Builtin(b) = &service.kind
            && b.protocol == Protocol::Switch
        {
            args(b).with_context(|| format!("service {:?}: builtin switch", service.name))?;
        }
    }
    Ok(())
}

/// Serves switch `service` on `listener`, on a thread of its own, until `shutdown`. What the
/// file gives was checked when it loaded; what only starting finds (a registry that cannot be
/// listed) is printed, and the service then answers nothing.
pub fn host(
    service: &Service,
    builtin: &Builtin,
    listener: TcpListener,
    shutdown: Arc<Shutdown>,
) -> std::io::Result<JoinHandle<()>> {
    let args = args(builtin).map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let name = service.name.clone();
    std::thread::Builder::new().name(format!("warren-{name}")).spawn(move || {
        if let Err(e) = crate::switch_cmd::serve(&args, listener, Until::Shutdown(shutdown), Some(&name)) {
            println!("warren: {name}: switch stopped: {e:#}");
        }
    })
}
