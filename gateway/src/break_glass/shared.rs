//! The break-glass state the gateway's state holds ([`BreakGlass`]): its own module, below the
//! gateway's state, so that the state imports nothing that imports it.

use super::{alert, grants, settings};
use crate::metrics::Metrics;

/// The gateway's break-glass state: grants in force and the alerts.
#[derive(Debug)]
pub struct BreakGlass {
    /// Grants, by caller identity.
    pub grants: grants::Grants,
    /// Alerts and the recent events.
    pub alerts: alert::Alerts,
    metrics: Metrics,
}

impl BreakGlass {
    /// The state for `settings`, counted in `metrics`.
    pub fn new(settings: settings::Settings, metrics: Metrics) -> Self {
        Self {
            grants: grants::Grants::default(),
            alerts: alert::Alerts::new(settings, metrics.clone()),
            metrics,
        }
    }

    /// Where break-glass assertions are counted.
    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
