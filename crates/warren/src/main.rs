//! The `warren` binary: servers, clients, the demo and the benches.

mod access_log;
mod agents_cmd;
mod agents_move;
mod agents_node;
mod agents_resolve;
mod chat_client;
mod cli;
mod clients;
mod dashboard;
mod dashboard_hosted;
mod dashboard_metrics;
mod dashboard_names;
mod dashboard_view;
mod demo;
mod files_cmd;
mod line_editor;
mod local_zone;
mod logging;
mod manual;
mod objects_cmd;
mod objects_registry;
mod oob_cmd;
mod pingpong_client;
mod registry_cmd;
mod registry_register;
mod serve;
mod switch_cmd;
mod switch_http;
mod switch_metrics;
mod switch_node;
mod switch_registry;
mod systemd;
mod up;
mod up_registry;

use clap::Parser;

use crate::cli::{BenchCommand, Cli, Command};

fn main() {
    let cli = Cli::parse();
    logging::set_format(cli.log_format);
    let outcome = run(cli);
    access_log::flush(std::time::Duration::from_secs(2));
    if let Err(e) = outcome {
        if is_broken_pipe(&e) {
            std::process::exit(0);
        }
        eprintln!("warren: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::serve(args.protocol, &args.server),
        Command::Up(args) => up::up(&args),
        Command::Status(args) => up::status(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Pingpong(args) => serve::pingpong(&args),
        Command::Largerhttpd(args) => serve::largerhttpd(&args),
        Command::Chatserver(args) => serve::chatserver(&args),
        Command::Chat { host, port, timeout } => clients::chat(host, port, timeout),
        Command::Timeserver(args) => serve::timeserver(&args),
        Command::Timeclient(args) => clients::timeclient(&args),
        Command::Oob(args) => oob_cmd::run(&args),
        Command::Echo(args) => clients::echo(&args),
        Command::Discard(args) => clients::discard(&args),
        Command::Daytime(args) => clients::daytime(&args),
        Command::Time(args) => clients::time(&args),
        Command::Registry(command) => registry_cmd::run(command),
        Command::Bench { what: BenchCommand::Models(args) } => warren_bench::models(&args),
        Command::Bench { what: BenchCommand::Http(args) } => warren_bench::http(&args),
        Command::Files(args) => files_cmd::run(&args),
        Command::Objects(args) => objects_cmd::run(&args),
        Command::Call(args) => objects_cmd::call(&args),
        Command::Switch(args) => switch_cmd::run(&args),
        Command::Agents(args) => agents_cmd::run(&args),
        Command::Completions(args) => manual::completions(&args),
        Command::Man(args) => manual::man(&args),
        Command::Bench { what: BenchCommand::Oob(args) } => warren_bench::oob(&args),
        Command::Bench { what: BenchCommand::Superd(args) } => warren_bench::superd(&args),
        Command::Bench { what: BenchCommand::Registry(args) } => warren_bench::registry(&args),
        Command::Bench { what: BenchCommand::Dns(args) } => warren_bench::dns(&args),
        Command::Bench { what: BenchCommand::Soak(args) } => warren_bench::soak(&args),
        Command::Bench { what: BenchCommand::Rpc(args) } => warren_bench::rpc(&args),
        Command::Bench { what: BenchCommand::Migrate(args) } => warren_bench::migrate(&args),
        Command::Bench { what: BenchCommand::Switch(args) } => warren_bench::switch(&args),
        Command::Bench { what: BenchCommand::Report(args) } => warren_bench::report(&args),
        Command::Bench { what: BenchCommand::Chart(args) } => warren_bench::redraw_chart(&args),
        Command::Bench { what: BenchCommand::TonicHello(args) } => warren_bench::serve_tonic_hello(&args),
        Command::Bench { what: BenchCommand::RpcReplica(args) } => warren_bench::serve_replica(&args),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .any(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
}
