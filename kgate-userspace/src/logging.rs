//! Logging set-up for every subcommand: text or JSON lines on stderr, filtered by
//! `RUST_LOG` directives (default `info`), and changeable while the agent runs
//! ([`set_filter`], which the admin endpoint's `/loglevel` calls), so an operator can
//! turn on `debug` for one module on one node without a restart.
//!
//! Not here: shipping logs anywhere; request records go to [`crate::record`].

use std::sync::{Mutex, OnceLock};

use tracing_subscriber::EnvFilter;

type Setter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

static SETTER: OnceLock<Setter> = OnceLock::new();
static CURRENT: Mutex<String> = Mutex::new(String::new());

/// Installs the global subscriber. Call once, first thing.
pub fn init(json: bool) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"));
    *current_lock() = filter.to_string();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    // The two formats are different types, so each keeps its own reload handle.
    let setter: Setter = if json {
        let builder = builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    } else {
        let builder = builder.with_filter_reloading();
        let handle = builder.reload_handle();
        builder.init();
        Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()))
    };
    let _ = SETTER.set(setter);
}

/// Replaces the filter with `directives` (`debug`, `kgate=debug,hyper=info`, ...).
pub fn set_filter(directives: &str) -> Result<String, String> {
    let directives = directives.trim();
    if directives.is_empty() {
        return Err("empty filter: give a level or RUST_LOG-style directives".to_owned());
    }
    let filter = EnvFilter::try_new(directives)
        .map_err(|e| format!("invalid filter {directives:?}: {e}"))?;
    let text = filter.to_string();
    let setter = SETTER
        .get()
        .ok_or_else(|| "logging is not initialised".to_owned())?;
    setter(filter)?;
    current_lock().clone_from(&text);
    Ok(text)
}

/// The filter in force.
pub fn current() -> String {
    current_lock().clone()
}

fn current_lock() -> std::sync::MutexGuard<'static, String> {
    CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
