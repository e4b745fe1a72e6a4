//! Ctrl-C (SIGINT) and SIGTERM as a flag that every waiting step can watch, so the runner stops what it
//! is doing and still tears the lab down instead of dying with resources left billing.

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Interrupt {
    received: watch::Receiver<bool>,
}

impl Interrupt {
    /// Start listening. Must be called inside the tokio runtime; from then on Ctrl-C no longer kills
    /// the process, it sets the flag.
    pub fn install() -> Self {
        let (sender, received) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = sender.send(true);
            // Keep the handler installed so a second Ctrl-C during teardown cannot kill us either.
            std::future::pending::<()>().await;
        });
        Self { received }
    }

    /// A flag that is never set (dry runs).
    pub fn never() -> Self {
        let (sender, received) = watch::channel(false);
        std::mem::forget(sender);
        Self { received }
    }

    pub fn is_set(&self) -> bool {
        *self.received.borrow()
    }

    /// Resolves once an interrupt has arrived.
    pub async fn wait(&self) {
        let mut received = self.received.clone();
        if received.wait_for(|set| *set).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
