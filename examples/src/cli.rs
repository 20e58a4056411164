//! What every binary needs besides the backend: `--meta k=v` parsing, logging, waiting for
//! Ctrl-C or SIGTERM, and printing an error with its causes.

use crate::BoxError;
use registry_service::Metadata;
use std::process::ExitCode;

/// Parses one `--meta` value, `key=value` (the value may contain `=`).
pub fn parse_meta_pair(raw: &str) -> Result<(String, String), String> {
    match raw.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("expected key=value, got {raw:?}")),
    }
}

/// Builds metadata from `--meta` pairs: `version`, `zone` and `weight` fill those fields, any
/// other key becomes a label.
pub fn metadata_from_pairs(pairs: &[(String, String)]) -> Result<Metadata, String> {
    let mut metadata = Metadata::default();
    for (key, value) in pairs {
        metadata = match key.as_str() {
            "version" => metadata.with_version(value.clone()),
            "zone" => metadata.with_zone(value.clone()),
            "weight" => {
                let weight = value
                    .parse()
                    .map_err(|_| format!("weight must be a whole number, got {value:?}"))?;
                metadata.with_weight(weight)
            }
            _ => metadata.with_label(key.clone(), value.clone()),
        };
    }
    Ok(metadata)
}

/// Logs to stderr, filtered by `RUST_LOG` or else by `default` (e.g. `"info"`).
pub fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // A second call (several examples in one test binary) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Listens for Ctrl-C, and for SIGTERM on Unix, from the moment it is called; the future it
/// returns resolves on the first of them.
///
/// Call it before printing that the process is ready, and keep the one future for the whole
/// run. Until a listener exists, SIGTERM takes its default action and kills the process, so a
/// supervisor that stops it right after reading the line would see a failed exit and no
/// deregistration; and a listener made afresh in a loop misses a signal that lands between two
/// turns.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::SignalKind;
        let interrupt = unix_signal::listen(SignalKind::interrupt(), "Ctrl-C");
        let terminate = unix_signal::listen(SignalKind::terminate(), "SIGTERM");
        async move {
            tokio::select! {
                () = unix_signal::received(interrupt) => {}
                () = unix_signal::received(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        // Tokio's portable Ctrl-C listener starts listening when first polled.
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(unix)]
mod unix_signal {
    use tokio::signal::unix::{signal, Signal, SignalKind};

    /// A listener for `kind`, or `None` (with a warning) when the OS refuses one: the other
    /// signal, or killing, still stops the process.
    pub(super) fn listen(kind: SignalKind, name: &str) -> Option<Signal> {
        signal(kind)
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for {name}"))
            .ok()
    }

    /// Resolves when `signal` arrives; never without a listener.
    pub(super) async fn received(signal: Option<Signal>) {
        match signal {
            Some(mut signal) => {
                signal.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// The exit code of a binary's `main`: success, or the error and its causes on stderr and 1.
pub fn exit_code(result: Result<(), BoxError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            // Many errors already print their source: only show causes that add something.
            let mut shown = error.to_string();
            let mut source = error.source();
            while let Some(cause) = source {
                let text = cause.to_string();
                if !shown.contains(&text) {
                    eprintln!("  caused by: {text}");
                    shown = text;
                }
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_pairs_parse_and_fill_known_fields() {
        assert_eq!(
            parse_meta_pair("a=b=c"),
            Ok(("a".to_owned(), "b=c".to_owned()))
        );
        assert!(parse_meta_pair("novalue").is_err());
        assert!(parse_meta_pair("=x").is_err());
        let pairs: Vec<(String, String)> = ["version=1.2", "zone=eu-1", "weight=5", "tier=web"]
            .iter()
            .map(|raw| parse_meta_pair(raw).unwrap())
            .collect();
        let metadata = metadata_from_pairs(&pairs).unwrap();
        assert_eq!(
            metadata,
            Metadata::default()
                .with_version("1.2")
                .with_zone("eu-1")
                .with_weight(5)
                .with_label("tier", "web")
        );
        assert!(metadata_from_pairs(&[("weight".into(), "heavy".into())]).is_err());
    }
}
