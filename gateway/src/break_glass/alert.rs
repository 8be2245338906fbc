//! Break-glass alerts: each event is kept in a bounded list the admin API shows
//! (`GET /break-glass`), logged at `warn`, and POSTed as JSON to `break_glass.webhook_url` off the
//! request's path (the response never waits for it), tried at most `webhook_attempts` times with
//! a timeout each; failures are logged and counted. An alert holds who, references, the reason,
//! times and the request id: never a protected value.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;

use super::settings::Settings;
use crate::metrics::Metrics;

/// How many recent events the admin API lists.
pub const RECENT: usize = 1000;
/// How many alerts may be in flight at once; more are dropped (and counted), never queued
/// without bound.
pub const IN_FLIGHT: usize = 256;

/// Where alerts go.
pub struct Alerts {
    settings: Settings,
    /// `None` when no HTTP client could be built (no TLS roots): every alert then counts as
    /// dropped.
    client: Option<reqwest::Client>,
    recent: Mutex<VecDeque<Value>>,
    in_flight: Arc<Semaphore>,
    counts: Arc<Counts>,
    metrics: Metrics,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Alerts {
    /// Alerts under `settings`, counted in `metrics`.
    pub fn new(settings: Settings, metrics: Metrics) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.webhook_timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .ok();
        Self {
            settings,
            client,
            recent: Mutex::new(VecDeque::new()),
            in_flight: Arc::new(Semaphore::new(IN_FLIGHT)),
            counts: Arc::new(Counts::default()),
            metrics,
        }
    }

    /// Records `event`, logs it, and sends it to the webhook in the background.
    pub fn raise(&self, event: Value) {
        tracing::warn!(break_glass = %event, "break-glass");
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() >= RECENT {
                recent.pop_front();
            }
            recent.push_back(event.clone());
        }
        let Some(url) = self.settings.webhook_url.clone() else {
            return;
        };
        let (Ok(permit), Ok(runtime), Some(client)) = (
            Arc::clone(&self.in_flight).try_acquire_owned(),
            tokio::runtime::Handle::try_current(),
            self.client.clone(),
        ) else {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            self.metrics.break_glass_alert("dropped");
            tracing::error!(
                "a break-glass alert was dropped: too many in flight, or no HTTP client"
            );
            return;
        };
        let counts = Arc::clone(&self.counts);
        let metrics = self.metrics.clone();
        let attempts = self.settings.webhook_attempts;
        runtime.spawn(async move {
            let _permit = permit;
            for attempt in 1..=attempts {
                let sent = client.post(url.clone()).json(&event).send().await;
                match sent {
                    Ok(response) if response.status().is_success() => {
                        counts.sent.fetch_add(1, Ordering::Relaxed);
                        metrics.break_glass_alert("sent");
                        return;
                    }
                    Ok(response) => tracing::warn!(
                        attempt,
                        status = response.status().as_u16(),
                        "the break-glass webhook refused an alert"
                    ),
                    Err(error) => tracing::warn!(
                        attempt, error = %error.without_url(),
                        "the break-glass webhook could not be reached"
                    ),
                }
                if attempt < attempts {
                    tokio::time::sleep(Duration::from_millis(200 << attempt.min(5))).await;
                }
            }
            counts.failed.fetch_add(1, Ordering::Relaxed);
            metrics.break_glass_alert("failed");
            tracing::error!(
                attempts,
                "a break-glass alert could not be delivered to the webhook"
            );
        });
    }

    /// The recent events, oldest first, and the counts: what `GET /break-glass` shows.
    pub fn recent(&self) -> (Vec<Value>, Value) {
        let recent = self
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let counts = json!({
            "webhook": self.settings.webhook_url.as_ref().map(url::Url::as_str),
            "sent": self.counts.sent.load(Ordering::Relaxed),
            "failed": self.counts.failed.load(Ordering::Relaxed),
            "dropped": self.counts.dropped.load(Ordering::Relaxed),
        });
        (recent, counts)
    }
}
