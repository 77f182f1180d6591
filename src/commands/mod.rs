//! One module per subcommand, as mini-redis keeps one file per command: each owns its flags (the
//! clap arguments, re-exported from [`crate::cli`]) and its body, the `run` function the binary
//! dispatches to. What several subcommands share (the Kafka and cluster flags, the lag rule)
//! stays in [`crate::cli`]; the shutdown signal they share is here.

pub mod alias;
pub mod backfill;
pub mod config;
pub mod cutover;
pub mod generate;
pub mod index;
pub mod lag;
pub mod rollback;
pub mod run;
pub mod verify;

/// The target of the subcommands' log lines: the binary's, where these bodies used to live, so
/// that log searches and `--log-level` directives written against it keep matching.
const LOG_TARGET: &str = "dual_indexer";

/// Listens for SIGTERM and SIGINT from the moment it is called, and resolves on the first one.
/// A signal that arrives before the future is first polled (during startup) is not lost, and no
/// longer kills the process outright: the replay then drains and exits 0 as soon as it starts.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let listening = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match listening {
            (Ok(mut term), Ok(mut interrupt)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = interrupt.recv() => {}
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(target: LOG_TARGET, error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the replay cleanly");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!(target: LOG_TARGET, "shutdown requested; draining");
    }
}
