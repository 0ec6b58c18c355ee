//! One telemetry init for every wasp binary: JSON logs through `tracing`, filtered by `RUST_LOG`
//! or the seed's `LOG_LEVEL`, with a handle to change the filter at run time.

use tracing_subscriber::{
    EnvFilter, Registry, layer::SubscriberExt, reload, util::SubscriberInitExt,
};

/// Changes the active log filter (e.g. from an admin endpoint) without a restart.
pub type FilterHandle = reload::Handle<EnvFilter, Registry>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

impl LogFormat {
    /// The format a `--log-format` value names: `text`, anything else JSON.
    pub fn from_name(name: &str) -> Self {
        if name == "text" {
            Self::Text
        } else {
            Self::Json
        }
    }
}

/// The filter to start with: `RUST_LOG` wins, then `LOG_LEVEL` (seed env), then `info`.
pub fn initial_filter(rust_log: Option<&str>, log_level: Option<&str>) -> EnvFilter {
    let spec = rust_log
        .or(log_level)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or("info");
    EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) -> FilterHandle {
    let filter = initial_filter(
        std::env::var("RUST_LOG").ok().as_deref(),
        std::env::var("LOG_LEVEL").ok().as_deref(),
    );
    let (filter, handle) = reload::Layer::new(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .init(),
        LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).init(),
    }
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_format_names() {
        assert_eq!(LogFormat::from_name("text"), LogFormat::Text);
        assert_eq!(LogFormat::from_name("json"), LogFormat::Json);
        assert_eq!(LogFormat::from_name("other"), LogFormat::Json);
    }

    #[test]
    fn rust_log_wins_over_log_level_and_bad_specs_fall_back() {
        assert_eq!(
            initial_filter(Some("debug"), Some("warn")).to_string(),
            "debug"
        );
        assert_eq!(initial_filter(None, Some("warn")).to_string(), "warn");
        assert_eq!(initial_filter(None, None).to_string(), "info");
        assert_eq!(initial_filter(Some("  "), None).to_string(), "info");
        assert_eq!(initial_filter(Some("=[bad"), None).to_string(), "info");
    }
}
