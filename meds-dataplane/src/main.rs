//! meds-dataplane: parse flags, set up logging and signal handling, run the library.
//!
//! Exit codes: 0 clean shutdown; 1 runtime error (queue bind, firewall, worker); 2 usage error
//! (bad flag value or MEDS_LOG filter).
//!
//! `replay FILE`: 0 when the capture was read to its end (even if some packets did not parse);
//! 1 when the policy could not be loaded (snapshot, controller) or the output failed; 2 for a
//! usage error or an unreadable, malformed or truncated capture. A summary goes to stderr.

use std::future::Future;
use std::io::{self, IsTerminal};
use std::mem::MaybeUninit;
use std::process::ExitCode;
use std::thread;

use clap::Parser;
use meds_dataplane::chain::RuleSet;
use meds_dataplane::config::{Args, Command, Config, LogFormat, ReplayArgs};
use meds_dataplane::{ErrorChain, policy, replay};
use tracing::level_filters::LevelFilter;
use tracing_subscriber::EnvFilter;

/// How long `replay --sync-socket` waits for the controller's snapshot.
const FETCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(Command::Replay(replay_args)) = args.command.take() {
        return run_replay(&replay_args);
    }
    let config = match Config::from_args(args) {
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

/// `meds-dataplane replay`: load the policy, replay the capture to stdout, summary to stderr.
fn run_replay(args: &ReplayArgs) -> ExitCode {
    let state = match (&args.sync_socket, &args.snapshot) {
        (Some(socket), _) => replay::fetch_policy(socket, FETCH_TIMEOUT).map_err(|e| {
            format!(
                "cannot get the policy from {}: {}",
                socket.display(),
                ErrorChain(&e)
            )
        }),
        (None, Some(path)) => match policy::read_state_file(path) {
            Ok(Some(state)) => Ok(state),
            Ok(None) => Err(format!("snapshot {} does not exist", path.display())),
            Err(e) => Err(ErrorChain(&e).to_string()),
        },
        (None, None) => {
            eprintln!("meds-dataplane replay: no --sync-socket or --snapshot; using empty lists");
            Ok(policy::PolicyState::new())
        }
    };
    let rules: RuleSet = match state {
        Ok(state) => {
            if args.sync_socket.is_some() || args.snapshot.is_some() {
                eprintln!(
                    "meds-dataplane replay: policy generation {} ({} entries)",
                    state.generation(),
                    state.len()
                );
            }
            state.build()
        }
        Err(message) => {
            eprintln!("meds-dataplane replay: {message}");
            return ExitCode::from(1);
        }
    };
    let file = match std::fs::File::open(&args.file) {
        Ok(file) => io::BufReader::with_capacity(256 * 1024, file),
        Err(e) => {
            eprintln!(
                "meds-dataplane replay: cannot open {}: {e}",
                args.file.display()
            );
            return ExitCode::from(2);
        }
    };
    let stdout = io::BufWriter::new(io::stdout().lock());
    let options = replay::ReplayOptions {
        unparsable: args.unparsable.into(),
        uninspectable: args.tls_uninspectable.into(),
        verify_checksums: args.verify_checksums,
    };
    let report = replay::replay(file, stdout, &rules, options);
    eprintln!("meds-dataplane replay: {}", report.summary);
    match report.error {
        None => ExitCode::SUCCESS,
        Some(replay::ReplayError::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Some(e @ replay::ReplayError::Capture(_)) => {
            eprintln!(
                "meds-dataplane replay: {}: {}",
                args.file.display(),
                ErrorChain(&e)
            );
            ExitCode::from(2)
        }
        Some(e) => {
            eprintln!("meds-dataplane replay: {}", ErrorChain(&e));
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
