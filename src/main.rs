//! The `wijkpoort` binary: parse the command line, set up logging, run, and turn an
//! error into a message and an exit code (64 for configuration mistakes).

use clap::Parser;

/// glibc's allocator was a tenth of a gateway's CPU under load (sled allocates and
/// frees a node copy per write); mimalloc does the same work in less. See the README's
/// Performance section.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = wijkpoort::cli::Cli::parse();
    wijkpoort::logging::init(cli.log_format, cli.default_log_filter());
    if let Err(e) = wijkpoort::cli::run(cli) {
        eprintln!("wijkpoort: {e}");
        std::process::exit(e.exit_code());
    }
}
