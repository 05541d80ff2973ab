//! medsctl binary: parse flags, run the command, print, exit with a documented code
//! (0 ok, 1 `check` found nothing, 2 usage, 3 controller unreachable/runtime, 4 invalid argument).

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;
use medsctl::CtlError;
use medsctl::cli::{Cli, Command, EventsArgs};
use medsctl::error::EXIT_RUNTIME;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // Usage errors exit with 2 inside clap; --help and --version with 0.
    let cli = Cli::parse();
    if let Command::Events(args) = &cli.command {
        return events(&cli, args).await;
    }
    match medsctl::run(&cli).await {
        Ok(output) => {
            if let Err(e) = print_line(&output.stdout) {
                // A closed pipe (`medsctl … | head`) is the reader's choice, not a failure.
                if e.kind() != io::ErrorKind::BrokenPipe {
                    eprintln!("medsctl: cannot write the output: {e}");
                    return ExitCode::from(EXIT_RUNTIME);
                }
            }
            for warning in &output.warnings {
                eprintln!("medsctl: {warning}");
            }
            ExitCode::from(output.code)
        }
        Err(err) => {
            eprintln!("medsctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

/// `medsctl events`: lines printed as they arrive; Ctrl-C (SIGINT) ends it with exit 0.
/// Without `--follow` the whole command is bounded by `--timeout`, like every other one.
async fn events(cli: &Cli, args: &EventsArgs) -> ExitCode {
    let streaming = async {
        let streaming = medsctl::events(cli, args, print_line);
        if args.follow {
            return streaming.await;
        }
        let limit = cli.time_limit();
        tokio::time::timeout(limit, streaming)
            .await
            .unwrap_or_else(|_| {
                Err(CtlError::Timeout {
                    socket: cli.socket.clone(),
                    after: limit,
                })
            })
    };
    let result = tokio::select! {
        r = streaming => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("medsctl: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}

fn print_line(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}
