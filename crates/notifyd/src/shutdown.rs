//! SIGTERM and SIGINT (systemd sends SIGTERM; a terminal sends SIGINT).

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Cancels `token` on the first SIGTERM or SIGINT.
pub fn on_signal(token: CancellationToken) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        // Cancelled first: nothing after the signal may keep the daemon from stopping.
        token.cancel();
        tracing::info!("{which}: shutting down");
    });
    Ok(())
}
