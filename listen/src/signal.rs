//! The signals that stop a server gracefully.

use std::future::Future;

use tracing::{info, warn};

/// Resolves on the first SIGTERM or Ctrl-C (SIGINT).
///
/// The handlers are installed when this is called, not when the future is first polled:
/// a server hands the future to its serving loop, and a signal that came after the
/// listeners' first answer but before that first poll would meet the default action and
/// kill the process without draining. Call it before serving.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let terminate = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            let wait = |handler: std::io::Result<tokio::signal::unix::Signal>,
                        name: &'static str| async move {
                match handler {
                    Ok(mut handler) => {
                        handler.recv().await;
                    }
                    Err(e) => {
                        warn!(error = %e, signal = name, "cannot listen for the signal");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(interrupt, "SIGINT") => info!("ctrl-c received"),
                () = wait(terminate, "SIGTERM") => info!("sigterm received"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => info!("ctrl-c received"),
                Err(e) => {
                    warn!(error = %e, "cannot listen for ctrl-c");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}
