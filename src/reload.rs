//! Watches the directories of mounted files and calls back when something in them changes.
//!
//! The kubelet updates ConfigMap and Secret volumes by writing a new timestamped directory and
//! atomically renaming the `..data` symlink onto it, so a watch on the file itself would keep
//! following the old inode: the directory is watched instead. A slow poll backs the watch up
//! (inotify can overflow, and some filesystems send no events); callers make reloads idempotent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Coalesces the burst of events one kubelet update makes into one reload.
const DEBOUNCE: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path} for changes: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// Calls `on_change` after files in any of `dirs` change, and at least every `poll` interval.
/// The watch lives as long as the returned task.
pub fn watch_dirs(
    what: &'static str,
    dirs: Vec<PathBuf>,
    poll: Duration,
    mut on_change: impl FnMut() + Send + 'static,
) -> Result<JoinHandle<()>, WatchError> {
    let (sender, mut events) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = sender.send(());
        }
    })
    .map_err(|source| WatchError {
        path: PathBuf::new(),
        source,
    })?;
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    for dir in &unique {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError {
                path: dir.clone(),
                source,
            })?;
    }
    tracing::debug!(what, dirs = ?unique, "watching for changes");
    Ok(tokio::spawn(async move {
        // Dropping the watcher would end the watch: it lives in this task.
        let _watcher = watcher;
        let mut ticker = tokio::time::interval(poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            tokio::select! {
                event = events.recv() => {
                    if event.is_none() {
                        return;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                    while events.try_recv().is_ok() {}
                }
                _ = ticker.tick() => {}
            }
            on_change();
        }
    }))
}

/// The directory holding a mounted file (the one to watch).
pub fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}
