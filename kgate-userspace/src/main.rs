//! The `kgate` binary: `kgate agent` runs the node agent; the other subcommands are the
//! admin CLI. The commands live in [`kgate::cli`]; this only parses, sets up logging
//! and runs the one asked for.

use std::process::ExitCode;

use clap::Parser as _;
use kgate::cli::Cli;

fn main() -> ExitCode {
    // A usage error exits here with clap's message and code 2.
    let cli = Cli::parse();
    kgate::logging::init(cli.json_logs());
    match cli.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("kgate: {error:#}");
            error
                .downcast_ref::<kgate::cli::Exit>()
                .map_or(ExitCode::FAILURE, |exit| ExitCode::from(exit.code))
        }
    }
}
