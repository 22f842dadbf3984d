//! The `wijkpoort` binary: parse the command line, set up logging, run, and turn an
//! error into a message and an exit code (64 for configuration mistakes).

use clap::Parser;

/// glibc's allocator was a tenth of a gateway's CPU under load (sled allocates and
/// frees a node copy per write); mimalloc does the same work in less. See the README's
/// Performance section.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its `mi_option_t` enum, the same index in the
/// v2 and v3 headers the -sys crate builds).
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

/// mimalloc keeps freed memory 10 ms (arenas 100 ms) before giving it back. Under load
/// sled frees node copies faster than that, so a gateway held ~40 MB it no longer used:
/// purging at once brought the bench's peak RSS from ~127 to ~104 MB at the practice and
/// ~122 to ~76 MB at the wijkteam, with no CPU change the bench could resolve (README,
/// Performance). An operator's own `MIMALLOC_PURGE_DELAY` is left as it is.
#[allow(unsafe_code)]
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets a plain integer option of the linked mimalloc; no memory is touched.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

fn main() {
    purge_freed_memory_at_once();
    let cli = wijkpoort::cli::Cli::parse();
    wijkpoort::logging::init(cli.log_format, cli.default_log_filter());
    if let Err(e) = wijkpoort::cli::run(cli) {
        eprintln!("wijkpoort: {e}");
        std::process::exit(e.exit_code());
    }
}
