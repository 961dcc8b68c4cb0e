//! The `invokd` binary: `serve` runs the gateway; the other commands talk to one.

mod cli;

use clap::Parser;

/// jemalloc, not glibc's allocator: a create allocates and frees many small pieces across the
/// runtime's threads, and glibc's arenas spent a sixth of the server's time on it (merging
/// free chunks among them); creates went 0.24 to 0.31 of the echo baseline, status 0.86 to
/// 0.97, for 1.5 MB more idle and 16 MB more with 10,000 streams open.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let code = cli::exit::code_of(&e);
            if code != cli::exit::INTERRUPTED {
                eprintln!("Error: {}", cli::exit::message(&e));
                if let Some(hint) = cli::exit::hint(&e) {
                    eprintln!("Hint: {hint}");
                }
            }
            std::process::ExitCode::from(code)
        }
    }
}
