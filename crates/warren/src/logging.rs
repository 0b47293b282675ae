//! What every server logs, and where: `tracing` events on standard output, and HTTP's access
//! log.
//!
//! Events are bare text lines by default, so that the protocols' narration reads like the
//! course's programs, or one JSON object per line (`--log-format json`, or `log_format = "json"`
//! in warren.toml) for a log collector: `timestamp`, `level`, `target`, `message` and the
//! event's own fields (`service`, `pid`, `from`, `duration` …). The level is `WARREN_LOG`'s,
//! else `RUST_LOG`'s (`EnvFilter` directives: `debug`, `warren::node=debug` …), else the
//! command's `-d`. Access-log lines ([`warren_models::ACCESS_TARGET`]) never go to that log:
//! they go to the access log when one is set, at any level ([`crate::access_log`]).

use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, filter};
use warren_models::ACCESS_TARGET;
pub use warren_node::config::{LogFormat, LogTo};

/// `--log-format`, which wins over a config's `log_format`.
static FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Keep `--log-format` for [`init`]; called once, before the command runs.
pub fn set_format(format: Option<LogFormat>) {
    if let Some(format) = format {
        let _ = FORMAT.set(format);
    }
}

/// Start logging: `debug` is the command's `-d` (none: info; 0: errors only; more: debug),
/// `format` the config's (`--log-format` wins), `access` where the access log goes.
pub fn init(debug: Option<u8>, format: LogFormat, access: Option<&LogTo>) -> anyhow::Result<()> {
    let level = match debug {
        None => "info",
        Some(0) => "error",
        Some(_) => "debug",
    };
    let levels = EnvFilter::try_from_env("WARREN_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(level));
    let log = match FORMAT.get().copied().unwrap_or(format) {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .without_time()
            .with_target(false)
            .with_level(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(std::io::stdout)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_writer(std::io::stdout)
            .boxed(),
    };
    let log = log.with_filter(filter::filter_fn(|m| m.target() != ACCESS_TARGET)).with_filter(levels);
    let access = access
        .map(crate::access_log::AccessLog::open)
        .transpose()?
        .map(|a| a.with_filter(filter::Targets::new().with_target(ACCESS_TARGET, tracing::Level::INFO)));
    let _ = tracing_subscriber::registry().with(log).with(access).try_init();
    Ok(())
}

/// Parse `--log-format`.
pub fn parse_format(s: &str) -> Result<LogFormat, String> {
    s.parse()
}

/// Parse `--access-log`.
pub fn parse_to(s: &str) -> Result<LogTo, String> {
    s.parse()
}
