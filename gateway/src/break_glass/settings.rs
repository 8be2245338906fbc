//! `[break_glass]` in the configuration: where alerts go and how hard the gateway tries.

use serde::Deserialize;

/// `[break_glass]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBreakGlass {
    webhook_url: Option<String>,
    webhook_timeout_ms: Option<u64>,
    webhook_attempts: Option<u32>,
}

/// How break-glass alerts are sent: `[break_glass]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Settings {
    /// Where each alert is POSTed (`break_glass.webhook_url`); `None`: no webhook (alerts are
    /// logged and listed by the admin API only).
    pub webhook_url: Option<url::Url>,
    /// How long one POST may take, in milliseconds (`break_glass.webhook_timeout_ms`, default
    /// 2000).
    pub webhook_timeout_ms: u64,
    /// How many POSTs an alert gets at most (`break_glass.webhook_attempts`, default 3).
    pub webhook_attempts: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            webhook_url: None,
            webhook_timeout_ms: 2000,
            webhook_attempts: 3,
        }
    }
}

/// The validated settings, or the key at fault and why.
pub(crate) fn settings(raw: &RawBreakGlass) -> Result<Settings, (&'static str, String)> {
    let defaults = Settings::default();
    let webhook_url = match raw.webhook_url.as_deref() {
        None | Some("") => None,
        Some(text) => {
            let url = url::Url::parse(text).map_err(|e| {
                (
                    "break_glass.webhook_url",
                    format!("`{text}` is not a URL: {e}"),
                )
            })?;
            if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
                return Err((
                    "break_glass.webhook_url",
                    format!("`{text}` is not an http or https URL with a host"),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err((
                    "break_glass.webhook_url",
                    "must not hold credentials (they would be logged with the URL)".into(),
                ));
            }
            Some(url)
        }
    };
    let webhook_timeout_ms = match raw.webhook_timeout_ms {
        None => defaults.webhook_timeout_ms,
        Some(n @ 100..=30_000) => n,
        Some(_) => {
            return Err((
                "break_glass.webhook_timeout_ms",
                "must be from 100 to 30000".into(),
            ));
        }
    };
    let webhook_attempts = match raw.webhook_attempts {
        None => defaults.webhook_attempts,
        Some(n @ 1..=10) => n,
        Some(_) => {
            return Err((
                "break_glass.webhook_attempts",
                "must be from 1 to 10".into(),
            ));
        }
    };
    Ok(Settings {
        webhook_url,
        webhook_timeout_ms,
        webhook_attempts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(url: Option<&str>, timeout: Option<u64>, attempts: Option<u32>) -> RawBreakGlass {
        RawBreakGlass {
            webhook_url: url.map(str::to_string),
            webhook_timeout_ms: timeout,
            webhook_attempts: attempts,
        }
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(
            settings(&raw(None, None, None)).unwrap(),
            Settings::default()
        );
        let set = settings(&raw(Some("https://siem.example/hook"), Some(500), Some(5))).unwrap();
        assert_eq!(
            set.webhook_url.unwrap().as_str(),
            "https://siem.example/hook"
        );
        for (bad, key) in [
            (
                raw(Some("siem.example"), None, None),
                "break_glass.webhook_url",
            ),
            (
                raw(Some("ftp://siem.example/"), None, None),
                "break_glass.webhook_url",
            ),
            (
                raw(Some("https://u:p@siem.example/"), None, None),
                "break_glass.webhook_url",
            ),
            (raw(None, Some(50), None), "break_glass.webhook_timeout_ms"),
            (raw(None, None, Some(0)), "break_glass.webhook_attempts"),
            (raw(None, None, Some(11)), "break_glass.webhook_attempts"),
        ] {
            assert_eq!(settings(&bad).unwrap_err().0, key);
        }
    }
}
