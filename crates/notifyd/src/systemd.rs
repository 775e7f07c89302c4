//! systemd `Type=notify` readiness (`READY=1` once listening, `STOPPING=1` at
//! shutdown, through the `sd-notify` crate; nothing when not started by systemd), and
//! the open-file limit.

/// A state change told to systemd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Listening: dependent units may start.
    Ready,
    /// Shutting down.
    Stopping,
}

/// Tells systemd, if it is listening (`NOTIFY_SOCKET`); a failure is logged, never fatal.
pub fn notify(state: State) {
    let state = match state {
        State::Ready => sd_notify::NotifyState::Ready,
        State::Stopping => sd_notify::NotifyState::Stopping,
    };
    if let Err(e) = sd_notify::notify(&[state]) {
        tracing::warn!(error = %e, "could not notify systemd");
    }
}

/// Raises the soft limit on open files to the hard limit (each connection is one), and
/// warns when what is in force is below what `limits` may hold open.
pub fn raise_fd_limit(limits: &crate::config::Limits) -> u64 {
    let fds = raise_nofile();
    let wanted = limits.max_connections + limits.max_pending_handshakes + 64;
    if usize::try_from(fds).unwrap_or(usize::MAX) < wanted {
        tracing::warn!(
            open_files = fds,
            max_connections = limits.max_connections,
            "the open-file limit is below max_connections + max_pending_handshakes: raise LimitNOFILE"
        );
    }
    fds
}

fn raise_nofile() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    if let (Some(cur), Some(max)) = (lim.current, lim.maximum) {
        if cur < max {
            let want = Rlimit {
                current: Some(max),
                maximum: Some(max),
            };
            if setrlimit(Resource::Nofile, want).is_ok() {
                return max;
            }
        }
        return cur;
    }
    // Unlimited.
    u64::MAX
}
