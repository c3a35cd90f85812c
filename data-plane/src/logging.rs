//! The level of the data plane's own process logs, following the `log_level` setting.
//!
//! The embedding program owns the tracing subscriber; it hands over a [`LogLevel`] that
//! can change the level (a `tracing-subscriber` reload handle in `main`). When `RUST_LOG`
//! is set it hands over none: the environment wins.

use tokio::sync::watch;
use tracing::{info, warn};

use crate::runtime::RuntimeConfigHandle;

/// Sets the level, given its name (`error` ... `trace`).
type SetLevel = dyn Fn(&str) -> Result<(), String> + Send + Sync;

/// Changes the process's log level.
pub struct LogLevel(Box<SetLevel>);

impl LogLevel {
    pub fn new(set: impl Fn(&str) -> Result<(), String> + Send + Sync + 'static) -> Self {
        Self(Box::new(set))
    }
}

impl std::fmt::Debug for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LogLevel")
    }
}

/// Applies the `log_level` of every config that comes, until `stop` turns true.
pub(crate) async fn follow(
    level: LogLevel,
    runtime: RuntimeConfigHandle,
    mut stop: watch::Receiver<bool>,
) {
    let mut applied = runtime.subscribe();
    // The subscriber starts at the setting's default.
    let mut current = fulcrum_proto::model::Settings::default().log_level;
    loop {
        if let Some(config) = runtime.load()
            && config.settings.log_level != current
        {
            let wanted = config.settings.log_level.clone();
            // Said while the louder of the two levels is in force, so that it shows.
            let quieter = rank(&wanted) < rank(&current);
            if quieter {
                info!(from = %current, to = %wanted, "log level changing");
            }
            match (level.0)(&wanted) {
                Ok(()) if !quieter => info!(from = %current, to = %wanted, "log level changed"),
                Ok(()) => {}
                Err(e) => warn!(level = %wanted, error = %e, "cannot change the log level"),
            }
            current = wanted;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            changed = applied.changed() => if changed.is_err() { return },
        }
    }
}

/// How much a level lets through.
fn rank(level: &str) -> u8 {
    match level {
        "error" => 1,
        "warn" => 2,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use fulcrum_proto::pb;

    use super::*;
    use crate::runtime::{ApplyKind, RuntimeConfig};

    fn config_with_level(revision: u64, level: &str) -> Arc<RuntimeConfig> {
        let mut resources = crate::runtime::tests::base_resources();
        resources.settings.push(pb::Setting {
            name: "log_level".into(),
            value: level.into(),
        });
        Arc::new(
            RuntimeConfig::from_snapshot(
                revision,
                "store-1",
                pb::Snapshot {
                    resources: Some(resources),
                },
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn follows_the_setting_and_skips_unchanged_levels() {
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let level = LogLevel::new({
            let seen = Arc::clone(&seen);
            move |l| {
                seen.lock().unwrap().push(l.to_string());
                Ok(())
            }
        });
        let runtime = RuntimeConfigHandle::new();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(follow(level, runtime.clone(), stopped));
        let levels = |want: &[&str]| {
            let seen = Arc::clone(&seen);
            let want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
            async move {
                for _ in 0..200 {
                    if *seen.lock().unwrap() == want {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
                assert_eq!(*seen.lock().unwrap(), want);
            }
        };
        runtime.store(
            config_with_level(1, "info"),
            ApplyKind::Snapshot,
            Default::default(),
        );
        runtime.store(
            config_with_level(2, "debug"),
            ApplyKind::Snapshot,
            Default::default(),
        );
        levels(&["debug"]).await;
        runtime.store(
            config_with_level(3, "debug"),
            ApplyKind::Snapshot,
            Default::default(),
        );
        runtime.store(
            config_with_level(4, "warn"),
            ApplyKind::Snapshot,
            Default::default(),
        );
        levels(&["debug", "warn"]).await;
        stop.send_replace(true);
        task.await.unwrap();
    }
}
