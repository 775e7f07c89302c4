//! The HTTP POST behind `WebSocket::publish`: bounded in time, never a PHP error.

use std::time::Duration;

/// The whole call (connect, TLS, send, answer) takes at most this long.
const TIMEOUT: Duration = Duration::from_secs(2);

thread_local! {
    static AGENT: ureq::Agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .user_agent(concat!("tsugi_websocket/", env!("CARGO_PKG_VERSION")))
            .build(),
    );
}

/// Posts a publish request; true when the daemon answered 200.
pub fn publish(url: &str, token: &str, body: &str) -> bool {
    AGENT.with(|agent| {
        agent
            .post(url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(body)
            .is_ok_and(|r| r.status() == 200)
    })
}
