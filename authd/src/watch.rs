//! Directory watching with a debounce, bridged into tokio.
//!
//! We watch directories, never files: editors and our own writer replace files by
//! renaming a temporary file over them, after which a watch on the old inode goes silent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the watch alive; dropping it stops the notifications.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
}

/// Watches `dir` and sends one `()` on the returned channel per burst of changes to
/// files accepted by `interesting`, after `debounce` of quiet.
pub fn watch_dir(
    dir: &Path,
    debounce: Duration,
    interesting: impl Fn(&Path) -> bool + Send + 'static,
) -> notify::Result<(DirWatch, mpsc::Receiver<()>)> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let relevant = match res {
            Ok(ev) => {
                !matches!(ev.kind, EventKind::Access(_))
                    && (ev.need_rescan() || ev.paths.iter().any(|p| interesting(p)))
            }
            // An error (e.g. queue overflow) may hide changes: reload to be safe.
            Err(_) => true,
        };
        if relevant {
            let _ = raw_tx.send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (tx, rx) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Swallow the rest of the burst.
            loop {
                match tokio::time::timeout(debounce, raw_rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok((DirWatch { _watcher: watcher }, rx))
}

/// The directory a file lives in (`.` for a bare name).
pub fn parent_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}
