//! The chapter's three tiers, for real: clients, a switch tier of two `warren switch`es, an
//! application tier of two object servers and a data tier of PostgreSQL, every host in a network
//! namespace of its own, on three networks joined by bridges (`warren_testkit::VirtualNet`):
//!
//! ```text
//!  front 10.77.1.0/24   client .100 · switch-a .2 · switch-b .3 · registry .53 (DNS)
//!  back  10.77.2.0/24   switch-a .2 · switch-b .3 · app-a .11 · app-b .12 · registry .53
//!  data  10.77.3.0/24   app-a .11 · app-b .12 · PostgreSQL .5
//! ```
//!
//! No host forwards between networks, so the client reaches the application tier only through a
//! switch, which relays across the virtual wires, and only the application tier reaches the
//! database. The switches follow the object servers by registry name, and the registry's DNS
//! answers one name, `www.warren.`, with both switches while their health checks pass.

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::{BIN, Data, Server, T, run};
use warren_testkit::{LocalPostgres, VirtualNet};

const SWITCH_A: &str = "10.77.1.2";
const SWITCH_B: &str = "10.77.1.3";
const REGISTRY_DNS: &str = "10.77.1.53";
const REGISTRY: &str = "10.77.2.53";
const APP_A: &str = "10.77.2.11";
const APP_B: &str = "10.77.2.12";
const DATABASE: &str = "10.77.3.5";

/// The owner tokens of the application tier's names and of the switches' name.
const APP_TOKEN: &str = "tiers-app";
const SWITCH_TOKEN: &str = "tiers-switch";

/// The three networks and their hosts; `None` (said on stderr) where namespaces cannot be made.
fn network() -> Option<VirtualNet> {
    let mut net = match VirtualNet::new("tiers") {
        Ok(net) => net,
        Err(e) if e.kind() == std::io::ErrorKind::Unsupported => {
            eprintln!("skipped: the three tiers need network namespaces of their own: {e}");
            return None;
        }
        Err(e) => panic!("virtual network: {e}"),
    };
    for bridge in ["front", "back", "data"] {
        net.bridge(bridge).unwrap();
    }
    let hosts: [(&str, &[(&str, &str)]); 7] = [
        ("client", &[("front", "10.77.1.100/24")]),
        ("registry", &[("front", "10.77.1.53/24"), ("back", "10.77.2.53/24")]),
        ("switch-a", &[("front", "10.77.1.2/24"), ("back", "10.77.2.2/24")]),
        ("switch-b", &[("front", "10.77.1.3/24"), ("back", "10.77.2.3/24")]),
        ("app-a", &[("back", "10.77.2.11/24"), ("data", "10.77.3.11/24")]),
        ("app-b", &[("back", "10.77.2.12/24"), ("data", "10.77.3.12/24")]),
        ("data", &[("data", "10.77.3.5/24")]),
    ];
    for (host, links) in hosts {
        net.host(host, links).unwrap();
    }
    Some(net)
}

/// `program ARGS` in `host`, in a process group of its own (a forced stop takes the group),
/// with its output piped.
fn command_in(net: &VirtualNet, host: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = net.command(host, program);
    cmd.args(args).env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    cmd
}

/// A `warren` server in `host`, once it says it is serving.
fn serve_in(net: &VirtualNet, host: &str, args: &[&str]) -> Server {
    Server::start(command_in(net, host, BIN, args), format!("{host}: warren {}", args.join(" ")))
}

/// A command run to its end in `host` (bounded); its stdout, or its stderr as the error.
fn output_in(net: &VirtualNet, host: &str, program: &str, args: &[&str]) -> Result<String, String> {
    let (status, out, err) = run(command_in(net, host, program, args), b"", T + T);
    if status.success() { Ok(out) } else { Err(format!("{status}: {err}")) }
}

/// `warren register NAME ADDR` from `host`, renewing until dropped (SIGTERM releases the lease).
struct Registered(Child);

impl Registered {
    fn new(net: &VirtualNet, host: &str, registry: SocketAddr, endpoint: SocketAddr, meta: &[&str]) -> Registered {
        let (registry, endpoint) = (registry.to_string(), endpoint.to_string());
        let mut args = vec!["register", "www", &endpoint, "--registry", &registry, "--token", SWITCH_TOKEN];
        args.extend(["--ttl", "10s"]);
        for m in meta {
            args.extend(["--meta", m]);
        }
        let mut cmd = command_in(net, host, BIN, &args);
        cmd.stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        // `warren register` gives up after its own 5 s timeout, so this read ends.
        let mut first = String::new();
        BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut first).unwrap();
        assert!(first.starts_with("registered "), "{host}: register: {first:?}");
        Registered(child)
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

/// What the client's resolver finds for `www.warren.` through the registry's DNS: the A
/// records' addresses, and the (address, port) of each SRV record, from its additional section.
fn resolve(net: &VirtualNet, dns: SocketAddr) -> (BTreeSet<IpAddr>, Vec<SocketAddr>) {
    let (server, port) = (format!("@{}", dns.ip()), dns.port().to_string());
    let dig = |kind: &str| {
        let args = [server.as_str(), "-p", &port, "+time=2", "+tries=2", "+noall", "+answer", "+additional"];
        let mut args = args.to_vec();
        args.extend(["www.warren", kind]);
        output_in(net, "client", "dig", &args).unwrap_or_else(|e| panic!("dig {kind}: {e}"))
    };
    // `www.warren. 5 IN A 10.77.1.2`
    let records = |text: &str, kind: &str| -> Vec<Vec<String>> {
        let fields = text.lines().map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
        fields.filter(|f| f.len() >= 5 && f[3] == kind).collect()
    };
    let a = records(&dig("A"), "A").iter().map(|f| f[4].parse().unwrap()).collect();
    let srv_text = dig("SRV");
    // `www.warren. 5 IN SRV 0 1 PORT 0a4d0102.addr.warren.`, and the target's A record.
    let glue = records(&srv_text, "A");
    let srv = records(&srv_text, "SRV")
        .iter()
        .map(|f| {
            let ip = glue.iter().find(|g| g[0] == f[7]).unwrap_or_else(|| panic!("no glue for {f:?}"))[4].parse();
            SocketAddr::new(ip.unwrap(), f[6].parse().unwrap())
        })
        .collect();
    (a, srv)
}

/// `warren call Tally METHOD ARGS` from the client through `via`: the answer, or the error.
fn call(net: &VirtualNet, via: SocketAddr, method: &str, args: &[&str]) -> Result<String, String> {
    let via = via.to_string();
    let mut all = vec!["call", "Tally", method, "--server", &via, "--call-timeout", "5s"];
    all.extend_from_slice(args);
    output_in(net, "client", BIN, &all).map(|out| out.trim().to_owned())
}

/// One `add 1` through `via`: the value it made. A race lost to the other object server is run
/// again inside the server, so no `conflict` reaches the client.
fn add_one(net: &VirtualNet, via: SocketAddr) -> i64 {
    let value = call(net, via, "add", &["1"]).unwrap_or_else(|e| panic!("add through {via}: {e}"));
    value.parse().unwrap_or_else(|_| panic!("add answered {value:?}"))
}

/// Tally's value through `via`.
fn get(net: &VirtualNet, via: SocketAddr) -> i64 {
    let value = call(net, via, "get", &[]).unwrap_or_else(|e| panic!("get through {via}: {e}"));
    value.parse().unwrap_or_else(|_| panic!("get answered {value:?}"))
}

/// The calls `warren objects ls` counts on `Tally` at the object server `at`, asked from `host`.
fn calls_on(net: &VirtualNet, host: &str, at: SocketAddr) -> u64 {
    let listing = output_in(net, host, BIN, &["objects", "ls", "--server", &at.to_string()]).unwrap();
    let line = listing.lines().find(|l| l.starts_with("Tally ")).unwrap_or_else(|| panic!("no Tally in {listing}"));
    line.split_whitespace().last().unwrap().parse().unwrap()
}

/// Tally's value as PostgreSQL holds it, read from `host` over the data network: the counter's
/// state is its value as 8 little-endian bytes.
fn stored_value(net: &VirtualNet, host: &str, url: &str) -> i64 {
    let sql = "SELECT encode(state, 'hex') FROM warren_objects WHERE name_key = 'tally'";
    let hex = output_in(net, host, "psql", &[url, "-tAc", sql]).unwrap_or_else(|e| panic!("psql: {e}"));
    let bytes: Vec<u8> =
        (0..16).step_by(2).map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).expect("hex state")).collect();
    i64::from_le_bytes(bytes.try_into().unwrap())
}

/// An object server in `host` on `listen`, keeping persistent objects in PostgreSQL at `url` and
/// registering them in the registry.
fn object_server(net: &VirtualNet, host: &str, listen: &str, url: &str, registry: SocketAddr, data: &Data) -> Server {
    let (listen, registry) = (format!("{listen}:0"), registry.to_string());
    let args = ["objects", "serve", "--listen", &listen, "--store", url, "--data", data.arg(), "--bare"];
    let mut args = args.to_vec();
    args.extend(["--registry", &registry, "--registry-token", APP_TOKEN, "--ttl", "5s"]);
    serve_in(net, host, &args)
}

/// Wait (bounded) until `cond` holds, asking every 250 ms (DNS answers are rate-limited per
/// client network, 20 a second).
fn within(limit: Duration, cond: impl FnMut() -> bool) -> bool {
    support::eventually_every(limit, Duration::from_millis(250), cond)
}

#[test]
fn clients_reach_postgresql_through_a_switch_found_by_dns_across_three_networks() {
    let Some(net) = network() else { return };
    let net = std::sync::Arc::new(net);

    // The data tier: PostgreSQL on its own host, admitting the data network with a password.
    let in_data = net.clone();
    let pg = std::thread::spawn(move || {
        in_data.enter_thread("data").unwrap();
        LocalPostgres::start_on_network("tiers", DATABASE.parse().unwrap(), "10.77.3.0/24")
    })
    .join()
    .unwrap()
    .expect("PostgreSQL (Debian's postgresql) must be installed: scripts/test installs it");
    let db_url = pg.network_url().unwrap();

    // The registry, on both networks: its DNS answers clients on the front, the switches and the
    // object servers register and watch on the back.
    let registry_data = Data::new("tiers-registry");
    let (listen, dns) = (format!("{REGISTRY}:0"), format!("{REGISTRY_DNS}:0"));
    let mut registry =
        serve_in(&net, "registry", &["registry", "--listen", &listen, "--dns", &dns, "--data", registry_data.arg()]);
    let dns_line = registry.wait_stdout(|l| l.starts_with("warren: serving dns"), T).expect("the DNS readiness line");
    let dns: SocketAddr = dns_line.rsplit(" on ").next().unwrap().parse().unwrap();

    // The application tier: A makes the persistent counter; B finds it in the database.
    let (data_a, data_b) = (Data::new("tiers-app-a"), Data::new("tiers-app-b"));
    let app_a = object_server(&net, "app-a", APP_A, &db_url, registry.addr, &data_a);
    let token = data_a.0.join("admin.token");
    let add = ["objects", "add", "Tally", "--class", "counter", "--persistent", "--server"];
    let mut add = add.to_vec();
    let app_a_addr = app_a.addr.to_string();
    add.extend([app_a_addr.as_str(), "--token-file", token.to_str().unwrap()]);
    output_in(&net, "app-a", BIN, &add).unwrap_or_else(|e| panic!("objects add: {e}"));
    let app_b = object_server(&net, "app-b", APP_B, &db_url, registry.addr, &data_b);
    let both_registered = within(T, || {
        let lookup = output_in(&net, "switch-a", BIN, &["lookup", "Tally", "--registry", &registry.addr.to_string()]);
        lookup.is_ok_and(|out| out.contains(&app_a.addr.to_string()) && out.contains(&app_b.addr.to_string()))
    });
    assert!(both_registered, "both object servers registered Tally");

    // The switch tier: each follows Tally's endpoints, and registers itself as www with a TCP
    // health check, which the registry runs across the front network.
    let follow = |host: &str, addr: &str| {
        let (listen, registry) = (format!("{addr}:0"), registry.addr.to_string());
        serve_in(&net, host, &["switch", "--listen", &listen, "--registry", &registry, "--backend-name", "Tally"])
    };
    let (switch_a, switch_b) = (follow("switch-a", SWITCH_A), follow("switch-b", SWITCH_B));
    let check = ["check=tcp", "check_interval=1s"];
    let www_a = Registered::new(&net, "switch-a", registry.addr, switch_a.addr, &check);
    let www_b = Registered::new(&net, "switch-b", registry.addr, switch_b.addr, &check);

    // One name, both switches.
    let (a, srv) = resolve(&net, dns);
    let switches: BTreeSet<IpAddr> = [SWITCH_A, SWITCH_B].iter().map(|s| s.parse().unwrap()).collect();
    assert_eq!(a, switches, "www.warren. answers with both switches");
    assert_eq!(srv.iter().copied().collect::<BTreeSet<_>>(), [switch_a.addr, switch_b.addr].into());

    // The client cannot reach the application tier but through a switch.
    let direct = call(&net, app_a.addr, "get", &[]).expect_err("the client has no route to the application tier");
    assert!(direct.to_lowercase().contains("unreachable"), "{direct}");

    // Calls through both switches, each answered by an object server that ran it on the state
    // PostgreSQL held and saved the new state there before answering; a read through the other
    // switch sees it, whichever object server answers.
    for i in 0..8 {
        let value = add_one(&net, srv[i % srv.len()]);
        assert_eq!(value, i as i64 + 1, "add {} through switch {}", i + 1, i % srv.len());
        assert_eq!(get(&net, srv[(i + 1) % srv.len()]), value, "a read through the other switch after add {}", i + 1);
    }
    assert_eq!(stored_value(&net, "app-a", &db_url), 8, "the state is in PostgreSQL");
    let (on_a, on_b) = (calls_on(&net, "switch-a", app_a.addr), calls_on(&net, "switch-a", app_b.addr));
    assert!(on_a > 0 && on_b > 0, "both object servers served calls: {on_a} on A, {on_b} on B");

    // A switch dies: its health check fails, and the name resolves to the other alone, through
    // which the calls go on.
    let killed = switch_a.stop_with(Signal::SIGKILL);
    assert!(!killed.status.success());
    let survivor: BTreeSet<IpAddr> = [SWITCH_B.parse().unwrap()].into();
    let mut last = (BTreeSet::new(), Vec::new());
    assert!(
        within(Duration::from_secs(15), || {
            last = resolve(&net, dns);
            last.0 == survivor
        }),
        "www.warren. still answers {:?} after switch A died",
        last.0
    );
    assert_eq!(last.1, [switch_b.addr]);
    assert_eq!(add_one(&net, last.1[0]), 9);
    assert_eq!(stored_value(&net, "app-b", &db_url), 9);

    drop((www_a, www_b));
    for server in [switch_b, app_a, app_b, registry] {
        server.stop_clean();
    }
    drop(pg);
}
