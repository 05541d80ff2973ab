//! meds-controld: parse flags, set up logging, run the controller until SIGTERM/SIGINT.
//! Exit codes: 0 clean stop, 1 runtime failure, 2 invalid flags or environment.

use std::process::ExitCode;

use clap::Parser;
use meds_controld::config::{Args, Config, LogFormat};

fn main() -> ExitCode {
    let args = Args::parse();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let config = match Config::from_args(&args, |k| std::env::var(k).ok(), root) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("meds-controld: {e}");
            return ExitCode::from(2);
        }
    };
    // Files and sockets start owner-only: the sockets are opened up to 0660 explicitly after
    // bind, so no other user can connect in between; the database stays 0600.
    // SAFETY: umask has no preconditions and cannot fail.
    unsafe {
        libc::umask(0o077);
    }
    init_logging(&args.log_level, args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("meds-controld")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meds-controld: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(meds_controld::run(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "meds-controld failed");
            eprintln!("meds-controld: {e}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Plain => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = int.recv() => tracing::info!("SIGINT: stopping"),
    }
}
