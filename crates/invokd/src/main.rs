//! The `invokd` binary: `serve` runs the gateway; the other commands talk to one.

mod cli;

use clap::Parser;

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
