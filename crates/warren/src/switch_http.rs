//! `warren switch --mode http`: the L7 front end. Each request is routed to a group of backends
//! by its host, path or a header (`--route`, first match wins, else the `default` group), and the
//! group's pool picks the backend; the spine's HTTP proxy session (`warren_proto::http_proxy`)
//! carries it. Each group is a pool of its own ([`Switch`]), with its own checks and reload.
//! See docs/switch.md.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use warren_balance::{Pool, PoolConfig};
use warren_models::{IdleConfig, ServeReport};
use warren_proto::http_proxy::{HttpProxy, ProxySettings, Reuse};
use warren_proto::pick::{Lease, Pick};

use crate::switch_cmd::{Switch, SwitchArgs, Until};
use crate::switch_metrics::SwitchStats;

/// The group of backends without `group=`, and of requests no route matches.
pub(crate) const DEFAULT_GROUP: &str = "default";

/// The http mode's flags.
#[derive(Debug, clap::Args)]
pub struct HttpArgs {
    /// http: send matching requests to a group of backends (`group=NAME` in their spec):
    /// `host=NAME:GROUP`, `path=/PREFIX:GROUP` or `header=NAME=VALUE:GROUP`. Repeatable; the
    /// first match wins, the `default` group takes the rest. Also `route RULE` lines in the
    /// backends file, after the flags'.
    #[arg(long = "route", value_name = "RULE")]
    pub routes: Vec<String>,
    /// http: the longest a backend may stay silent while a request waits on it (504 after).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub server_timeout: Duration,
    /// http: the longest a request head may take to arrive (408 after), and a kept-alive client
    /// connection may wait for its next request.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub client_timeout: Duration,
    /// http: further backends tried for a request that failed before its answer began.
    #[arg(long, default_value_t = 3)]
    pub retries: u32,
    /// http: the largest request body a `Content-Length` may announce (413 beyond); default any.
    #[arg(long, value_name = "BYTES")]
    pub max_body: Option<u64>,
    /// http: the longest an upgraded (WebSocket) connection may pass no byte either way.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1h")]
    pub tunnel_timeout: Duration,
    /// http: which requests may go over an idle backend connection that another client
    /// connection left to the shared pool (HAProxy's http-reuse).
    #[arg(long, value_enum, default_value = "safe")]
    pub http_reuse: ReuseArg,
    /// http: idle backend connections the shared pool keeps per backend.
    #[arg(long, default_value_t = 32)]
    pub pool_max_idle: usize,
    /// http: a pooled idle backend connection older than this is closed, not reused.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    pub pool_idle_timeout: Duration,
}

/// `--http-reuse`: [`Reuse`] as a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ReuseArg {
    /// Each client connection's backend connections close with it.
    Never,
    /// Every request but a client connection's first may take a pooled connection.
    Safe,
    /// Any request may.
    Always,
}

impl From<ReuseArg> for Reuse {
    fn from(arg: ReuseArg) -> Self {
        match arg {
            ReuseArg::Never => Reuse::Never,
            ReuseArg::Safe => Reuse::Safe,
            ReuseArg::Always => Reuse::Always,
        }
    }
}

/// What the event loop's shared pool keeps: nothing when reuse is off.
fn idle_pool(args: &HttpArgs) -> IdleConfig {
    let per_addr = if args.http_reuse == ReuseArg::Never { 0 } else { args.pool_max_idle };
    IdleConfig { per_addr, timeout: args.pool_idle_timeout }
}

/// Whether `name` may name a group: letters, digits, `-`, `_`, `.`.
pub(crate) fn is_group_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Whether a backends-file line is a route (`route RULE`).
pub(crate) fn is_route_line(line: &str) -> bool {
    line.strip_prefix("route").is_some_and(|rest| rest.starts_with([' ', '\t']))
}

/// Refuses http-only settings in the other modes, rather than ignoring them.
pub(crate) fn refuse_outside_http(args: &SwitchArgs) -> anyhow::Result<()> {
    if !args.http.routes.is_empty() {
        bail!("--route is for --mode http");
    }
    if let Some(spec) = crate::switch_cmd::specs(args)?.iter().find(|s| s.group.is_some()) {
        bail!("backend {}: group= is for --mode http", spec.name);
    }
    Ok(())
}

/// The routing groups `args` name (with `default` when registry names are followed), and the
/// routes, each checked to lead to a group.
fn groups(args: &SwitchArgs) -> anyhow::Result<(Vec<String>, Vec<Route>)> {
    let specs = crate::switch_cmd::specs(args)?;
    if specs.is_empty() && args.backend_names.is_empty() {
        bail!("no backend: give --backend ADDR (or a --backends-file with at least one, or --backend-name)");
    }
    let mut names: Vec<String> =
        specs.iter().map(|s| s.group.clone().unwrap_or_else(|| DEFAULT_GROUP.to_owned())).collect();
    // Registry endpoints join the groups given here, or the default one, which then exists.
    if !args.backend_names.is_empty() {
        names.push(DEFAULT_GROUP.to_owned());
    }
    names.sort_unstable();
    names.dedup();
    let routes = routes(args)?;
    for route in &routes {
        if !names.contains(&route.group) {
            bail!("route {:?} sends to group {:?}, which has no backend", route.rule, route.group);
        }
    }
    Ok((names, routes))
}

/// Checks the http mode's groups and routes (`switch_cmd::check` does the rest).
pub(crate) fn check(args: &SwitchArgs) -> anyhow::Result<()> {
    groups(args).map(drop)
}

/// `warren switch --mode http`, on `listener` until `until`.
pub(crate) fn serve(
    args: &SwitchArgs,
    config: &PoolConfig,
    listener: TcpListener,
    until: Until,
    stats: &Arc<SwitchStats>,
    say_metrics: impl FnOnce(),
) -> anyhow::Result<ServeReport> {
    let (names, routes) = groups(args)?;
    if !names.iter().any(|n| n == DEFAULT_GROUP) {
        println!("warren: switch: no backend in the default group: requests no route matches get 503");
    }
    let mut groups = Vec::new();
    for name in names {
        let switch =
            Switch::<SocketAddr>::start(Pool::new(config.clone())?, args, "http".to_owned(), Some(&name), stats)?;
        groups.push((name, Arc::new(switch)));
    }
    let router = Arc::new(Router::new(routes, groups, stats.clone()));
    let mut settings = ProxySettings::picking(router.clone());
    settings.connect_timeout = args.connect_timeout;
    settings.server_timeout = args.http.server_timeout;
    settings.client_timeout = args.http.client_timeout;
    settings.retries = args.http.retries;
    settings.max_body = args.http.max_body;
    settings.tunnel_timeout = args.http.tunnel_timeout;
    settings.reuse = args.http.http_reuse.into();
    let idle = idle_pool(&args.http);
    let report = crate::switch_cmd::serve_event(HttpProxy::new(settings), listener, until, idle, |said| {
        if let Some(addr) = said {
            crate::switch_cmd::say_ready(args, addr);
        }
        say_metrics();
        for (_, switch) in &router.groups {
            switch.start_checks();
        }
    })?;
    Ok(report)
}

/// What a route looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Match {
    /// The `Host` field, without its port unless the rule has one; any case.
    Host(String),
    /// The start of the request target.
    Path(String),
    /// A field by name (any case) with exactly this value.
    Header(String, String),
}

/// One `--route`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    rule: String,
    matches: Match,
    group: String,
}

/// The flags' routes, then the backends file's.
fn routes(args: &SwitchArgs) -> anyhow::Result<Vec<Route>> {
    let mut rules = args.http.routes.clone();
    if let Some(path) = &args.backends_file {
        let text = std::fs::read_to_string(path).with_context(|| format!("backends file {}", path.display()))?;
        let lines = text.lines().map(|l| l.split('#').next().unwrap_or_default().trim());
        rules.extend(lines.filter_map(|l| Some(l.strip_prefix("route")?.trim().to_owned())).filter(|r| !r.is_empty()));
    }
    rules.iter().map(|r| parse_route(r)).collect()
}

fn parse_route(rule: &str) -> anyhow::Result<Route> {
    let want = "want host=NAME:GROUP, path=/PREFIX:GROUP or header=NAME=VALUE:GROUP";
    let Some((test, group)) = rule.rsplit_once(':').filter(|(_, g)| is_group_name(g)) else {
        bail!("route {rule:?}: no group after the last ':' ({want})");
    };
    let matches = match test.split_once('=') {
        Some(("host", host)) if !host.is_empty() => Match::Host(host.to_ascii_lowercase()),
        Some(("path", prefix)) if prefix.starts_with('/') => Match::Path(prefix.to_owned()),
        Some(("header", field)) => match field.split_once('=') {
            Some((name, value)) if !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':') => {
                Match::Header(name.to_owned(), value.to_owned())
            }
            _ => bail!("route {rule:?}: a header rule is header=NAME=VALUE:GROUP"),
        },
        _ => bail!("route {rule:?}: {want}"),
    };
    Ok(Route { rule: rule.to_owned(), matches, group: group.to_owned() })
}

impl Match {
    fn accepts(&self, target: &str, fields: &[httparse::Header<'_>]) -> bool {
        let field = |name: &str| fields.iter().find(|f| f.name.eq_ignore_ascii_case(name)).map(|f| f.value);
        match self {
            Match::Path(prefix) => target.starts_with(prefix.as_str()),
            Match::Host(host) => {
                let Some(sent) = field("host").and_then(|v| std::str::from_utf8(v).ok()) else { return false };
                let sent = sent.trim();
                let bare = if host.contains(':') { sent } else { sent.rsplit_once(':').map_or(sent, |(h, _)| h) };
                bare.eq_ignore_ascii_case(host)
            }
            Match::Header(name, value) => {
                fields.iter().any(|f| f.name.eq_ignore_ascii_case(name) && f.value.trim_ascii() == value.as_bytes())
            }
        }
    }
}

/// The http mode's [`Pick`]: the request's group by the routes, then that group's pool.
#[derive(Debug)]
struct Router {
    routes: Vec<(Match, usize)>,
    groups: Vec<(String, Arc<Switch<SocketAddr>>)>,
    default: Option<usize>,
    /// Where a request no group takes is counted.
    stats: Arc<SwitchStats>,
}

impl Router {
    fn new(routes: Vec<Route>, groups: Vec<(String, Arc<Switch<SocketAddr>>)>, stats: Arc<SwitchStats>) -> Self {
        let at = |name: &str| groups.iter().position(|(n, _)| n == name);
        let routes = routes.into_iter().filter_map(|r| Some((r.matches, at(&r.group)?))).collect();
        let default = at(DEFAULT_GROUP);
        Self { routes, groups, default, stats }
    }

    /// The group for the request whose head is `head` (as the backend gets it).
    fn group(&self, head: &[u8]) -> Option<usize> {
        if self.routes.is_empty() {
            return self.default;
        }
        let mut fields = [httparse::EMPTY_HEADER; warren_proto::http_proxy::head::MAX_HEADERS];
        let mut request = httparse::Request::new(&mut fields);
        let target = match request.parse(head) {
            Ok(httparse::Status::Complete(_)) => request.path.unwrap_or_default(),
            _ => return self.default,
        };
        let found = self.routes.iter().find(|(m, _)| m.accepts(target, request.headers));
        found.map(|(_, group)| *group).or(self.default)
    }
}

impl Pick<SocketAddr> for Router {
    fn pick(&self, peer: Option<SocketAddr>, head: &[u8], now: Instant) -> Option<Box<dyn Lease<SocketAddr>>> {
        let Some(group) = self.group(head) else {
            self.stats.unavailable();
            return None;
        };
        let (_, switch) = &self.groups[group];
        switch.pick(peer, head, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse_and_bad_ones_say_why() {
        let r = parse_route("host=img.example:8080:static").unwrap();
        assert_eq!((r.matches, r.group.as_str()), (Match::Host("img.example:8080".into()), "static"));
        let r = parse_route("header=X-Tier=gold:premium").unwrap();
        assert_eq!(r.matches, Match::Header("X-Tier".into(), "gold".into()));
        assert!(parse_route("path=static:x").unwrap_err().to_string().contains("want"));
        assert!(parse_route("path=/static").unwrap_err().to_string().contains("no group"));
        assert!(parse_route("header=X-Tier:g").unwrap_err().to_string().contains("header=NAME=VALUE"));
        assert!(is_route_line("route path=/a:b") && !is_route_line("router:1"));
    }

    #[test]
    fn the_first_matching_route_wins() {
        let fields = [
            httparse::Header { name: "Host", value: b"Img.Example:8080" },
            httparse::Header { name: "x-tier", value: b"gold" },
        ];
        assert!(Match::Host("img.example".into()).accepts("/", &fields), "the port is left out");
        assert!(!Match::Host("img.example:81".into()).accepts("/", &fields));
        assert!(Match::Path("/static/".into()).accepts("/static/a.css", &fields));
        assert!(!Match::Path("/static/".into()).accepts("/api", &fields));
        assert!(Match::Header("X-Tier".into(), "gold".into()).accepts("/", &fields));
        assert!(!Match::Header("X-Tier".into(), "silver".into()).accepts("/", &fields));
    }
}
