//! meds-dataplane: parse flags, set up logging and signal handling, run the library.
//!
//! Exit codes: 0 clean shutdown; 1 runtime error (queue bind, firewall, worker); 2 usage error
//! (bad flag value or MEDS_LOG filter).

use std::future::Future;
use std::io::{self, IsTerminal};
use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::thread;

use clap::Parser;
use meds_dataplane::config::{Args, Config, LogFormat};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let config = match Config::from_args(Args::parse()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("meds-dataplane: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_logging(config.log_level, config.log_format) {
        eprintln!("meds-dataplane: {e:#}");
        return ExitCode::from(2);
    }
    // Before any other thread exists, so every thread inherits the blocked signal mask.
    let shutdown = match shutdown_on_signals() {
        Ok(shutdown) => shutdown,
        Err(e) => {
            eprintln!("meds-dataplane: cannot set up signal handling: {e}");
            return ExitCode::from(1);
        }
    };
    match meds_dataplane::run(config, shutdown) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meds-dataplane: {:#}", anyhow::Error::from(e));
            ExitCode::from(1)
        }
    }
}

/// `--log-level`, unless `MEDS_LOG` holds a full tracing filter (e.g. `meds_dataplane=debug`).
fn init_logging(level: LevelFilter, format: LogFormat) -> anyhow::Result<()> {
    let filter = match std::env::var("MEDS_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| anyhow::anyhow!("MEDS_LOG {directives:?} is not a valid filter: {e}"))?,
        _ => EnvFilter::default().add_directive(level.into()),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    let installed = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

/// Block SIGTERM and SIGINT in every thread and wait for them on a dedicated thread with
/// `sigwait`, so a signal can never kill the process between installing and removing the
/// firewall rules. Child processes (iptables) start with an empty mask (std resets it).
fn shutdown_on_signals() -> io::Result<impl Future<Output = ()> + Send + 'static> {
    let mut raw = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set behind the valid pointer; sigaddset then only
    // adds valid signal numbers to the initialised set.
    let set = unsafe {
        libc::sigemptyset(raw.as_mut_ptr());
        libc::sigaddset(raw.as_mut_ptr(), libc::SIGTERM);
        libc::sigaddset(raw.as_mut_ptr(), libc::SIGINT);
        raw.assume_init()
    };
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    thread::Builder::new()
        .name("meds-signals".into())
        .spawn(move || {
            let mut tx = Some(tx);
            loop {
                let mut signal: libc::c_int = 0;
                // SAFETY: `set` is initialised and `signal` is a valid place to write to.
                let rc = unsafe { libc::sigwait(&set, &mut signal) };
                if rc != 0 {
                    // Cannot wait for signals any more: shut down rather than ignore them.
                    tracing::error!(error = %io::Error::from_raw_os_error(rc), "sigwait failed");
                    return;
                }
                let name = if signal == libc::SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                match tx.take() {
                    Some(tx) => {
                        tracing::info!(signal = name, "signal received; shutting down");
                        let _ = tx.send(());
                    }
                    None => tracing::warn!(signal = name, "already shutting down"),
                }
            }
        })?;
    Ok(async move {
        // An error means the signal thread is gone: shut down too.
        let _ = rx.await;
    })
}
