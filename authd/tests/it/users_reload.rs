//! Live reload of the users file: every way editors and tools write it.

use std::path::Path;
use std::time::{Duration, Instant};

use authd::users::store::UsersStore;

const D: &str = "$2b$10$Ok4cLvJFE5p3lewDJzVLleWgTNfofJB6eheGIgjj3dAA7VQvoYiPW";

fn file_with(names: &[&str]) -> String {
    let mut s = String::from("users:\n");
    for n in names {
        s.push_str(&format!(
            "  {n}:\n    displayname: {n}\n    password: '{D}'\n"
        ));
    }
    s
}

async fn wait_for(store: &UsersStore, what: &str, cond: impl Fn(&UsersStore) -> bool) -> Duration {
    let start = Instant::now();
    while !cond(store) {
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{what}: not applied within 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

fn has(store: &UsersStore, name: &str) -> bool {
    store.snapshot().get(name).is_some()
}

fn rename_replace(path: &Path, text: &str) {
    let tmp = path.with_extension("yml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_write_is_picked_up_and_broken_files_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users_database.yml");
    std::fs::write(&path, file_with(&["a"])).unwrap();
    let store = UsersStore::open(&path).unwrap();
    let _guard = store.watch().unwrap();
    let mut generation = store.subscribe();

    // Editor-style rename over the file.
    rename_replace(&path, &file_with(&["a", "b"]));
    wait_for(&store, "rename-replace", |s| has(s, "b")).await;
    assert!(generation.has_changed().unwrap());
    generation.mark_unchanged();

    // Truncate then write in place (with a pause in between, as slow tools do).
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert!(has(&store, "a"), "an empty file must not wipe the users");
        f.write_all(file_with(&["a", "c"]).as_bytes()).unwrap();
    }
    wait_for(&store, "truncate-then-write", |s| {
        has(s, "c") && !has(s, "b")
    })
    .await;

    // Delete, then recreate.
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(has(&store, "a"), "a deleted file keeps the last good copy");
    std::fs::write(&path, file_with(&["d"])).unwrap();
    wait_for(&store, "delete + recreate", |s| has(s, "d") && !has(s, "a")).await;

    // A broken file keeps the last good copy…
    rename_replace(&path, "users:\n  e:\n    password: [\n");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(has(&store, "d") && !has(&store, "e"));
    // …and is reported with file, line and reason by reload().
    match store.reload() {
        authd::users::store::Reload::Failed(e) => {
            assert_eq!(e.source, path.display().to_string());
            assert!(e.line.is_some(), "{e}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    // Fixing it applies again.
    rename_replace(&path, &file_with(&["d", "f"]));
    wait_for(&store, "fixed file", |s| has(s, "f")).await;
}
