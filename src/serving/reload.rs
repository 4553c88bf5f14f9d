//! Watches the directories of mounted files and calls back when something in them changes.
//!
//! The kubelet updates ConfigMap and Secret volumes by writing a new timestamped directory and
//! atomically renaming the `..data` symlink onto it, so a watch on the file itself would keep
//! following the old inode: the directory is watched instead. A slow poll backs the watch up
//! (inotify can overflow, and some filesystems send no events); callers make reloads idempotent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher};
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
        if event.is_ok_and(|event| signals_change(&event.kind)) {
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

/// Whether an event can mean that a file's content changed. inotify also reports opens and
/// read-only closes: the reload itself opens the files it watches, and counting those would make
/// every reload schedule the next one, forever.
fn signals_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directory holding a mounted file (the one to watch).
pub fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind, RenameMode};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn which_events_mean_a_change() {
        let table = [
            (
                "open",
                EventKind::Access(AccessKind::Open(AccessMode::Any)),
                false,
            ),
            ("read", EventKind::Access(AccessKind::Read), false),
            (
                "close after read",
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (
                "close after write",
                EventKind::Access(AccessKind::Close(AccessMode::Write)),
                true,
            ),
            ("create", EventKind::Create(CreateKind::File), true),
            (
                "write",
                EventKind::Modify(ModifyKind::Data(DataChange::Any)),
                true,
            ),
            (
                "chmod",
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                true,
            ),
            (
                "rename (kubelet's ..data swap)",
                EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                true,
            ),
            ("remove", EventKind::Remove(RemoveKind::File), true),
            ("unknown", EventKind::Any, true),
        ];
        for (name, kind, expected) in table {
            assert_eq!(signals_change(&kind), expected, "{name}");
        }
    }

    async fn wait_for(count: &AtomicUsize, at_least: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while count.load(Ordering::SeqCst) < at_least {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no change seen within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The callback re-reads the watched file, as every real reload does. Before opens were
    /// ignored, that read scheduled the next reload, ten times a second, forever.
    #[tokio::test]
    async fn a_reload_that_reads_the_file_does_not_trigger_the_next_one() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "a: 1\n").unwrap();
        let reloads = Arc::new(AtomicUsize::new(0));
        let task = {
            let reloads = reloads.clone();
            let file = file.clone();
            watch_dirs(
                "test",
                vec![dir.path().to_owned()],
                Duration::from_secs(3600),
                move || {
                    let _ = std::fs::read(&file);
                    reloads.fetch_add(1, Ordering::SeqCst);
                },
            )
            .unwrap()
        };

        // Reading the file from outside is no change either.
        for _ in 0..5 {
            let _ = std::fs::read(&file).unwrap();
        }
        tokio::time::sleep(DEBOUNCE * 4).await;
        assert_eq!(
            reloads.load(Ordering::SeqCst),
            0,
            "reads alone caused a reload"
        );

        std::fs::write(&file, "a: 2\n").unwrap();
        wait_for(&reloads, 1).await;
        tokio::time::sleep(DEBOUNCE * 2).await;
        let settled = reloads.load(Ordering::SeqCst);
        tokio::time::sleep(DEBOUNCE * 8).await;
        assert_eq!(
            reloads.load(Ordering::SeqCst),
            settled,
            "reloads went on with no change to the file"
        );
        task.abort();
    }
}
