//! Configuration read from files and reloaded when they change, without a restart: TLS
//! certificates, the authorization policy, ack keys.
//!
//! How: [`Watched`] keeps the value built from the files and the files' metadata (modification
//! time, size, inode) at the time it was built. [`Watched::current`] compares the metadata
//! again — a few `stat` calls, at most once per `check_every` — and rebuilds the value when it
//! changed. This follows every way files get rotated (in place, by rename, by Kubernetes'
//! symlink swap of a mounted Secret). A change that leaves files unreadable or invalid keeps the
//! previous value and logs one warning per state of the files; a later change (the rest of the
//! rotation) is tried again.

use std::{
    fmt,
    os::unix::fs::MetadataExt,
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};

/// Builds the value from the files; the error is one line naming the file and its flag.
type Loader<T> = Box<dyn Fn() -> Result<T, String> + Send + Sync>;

/// Modification time, size and inode of each file (`None` when it cannot be read): a change
/// in any of them means the files were rotated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint(Vec<Option<(Option<SystemTime>, u64, u64)>>);

impl Fingerprint {
    fn of(paths: &[PathBuf]) -> Self {
        Self(paths.iter().map(|p| std::fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len(), m.ino()))).collect())
    }
}

/// What the last check found.
struct State<T> {
    /// The value in use.
    value: Arc<T>,
    /// The files' state when `value` was built: equal means nothing to do.
    loaded: Fingerprint,
    /// The files' state the last failed reload saw, so a broken rotation warns once rather
    /// than on every use, and is tried again when the files change once more.
    failed: Option<Fingerprint>,
    /// When the files were last compared, to compare at most once per `check_every`.
    checked: Instant,
}

/// A value built from files, rebuilt when they change (see the module docs). Cheap to share
/// behind an `Arc`; `current` takes a short lock.
pub struct Watched<T> {
    /// What the files hold, for log lines ("TLS certificate", "authorization policy").
    what: &'static str,
    /// The files the value is built from.
    paths: Vec<PathBuf>,
    /// Builds the value from the files.
    load: Loader<T>,
    /// Least time between two comparisons of the files' metadata (zero = on every use).
    check_every: Duration,
    /// The value in use and what the last check saw.
    state: Mutex<State<T>>,
}

impl<T> fmt::Debug for Watched<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watched").field("what", &self.what).field("paths", &self.paths).finish_non_exhaustive()
    }
}

impl<T> Watched<T> {
    /// Builds the value from `paths` with `load`; fails (one line) when it cannot.
    pub fn new(
        what: &'static str,
        paths: Vec<PathBuf>,
        check_every: Duration,
        load: impl Fn() -> Result<T, String> + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let loaded = Fingerprint::of(&paths);
        let value = Arc::new(load()?);
        let state = State { value, loaded, failed: None, checked: Instant::now() };
        Ok(Self { what, paths, load: Box::new(load), check_every, state: Mutex::new(state) })
    }

    /// The value to use now: rebuilt first if the files changed since it was built (checked
    /// at most once per `check_every`).
    pub fn current(&self) -> Arc<T> {
        // A panic while holding the lock cannot leave the state half-written (every field is
        // assigned whole), so a poisoned lock is still usable.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() >= self.check_every {
            state.checked = Instant::now();
            let now = Fingerprint::of(&self.paths);
            if now != state.loaded && state.failed.as_ref() != Some(&now) {
                self.reload(&mut state, now);
            }
        }
        state.value.clone()
    }

    fn reload(&self, state: &mut State<T>, now: Fingerprint) {
        match (self.load)() {
            Ok(value) => {
                state.value = Arc::new(value);
                state.loaded = now;
                state.failed = None;
                tracing::info!(what = self.what, files = ?self.paths, "reloaded after its files changed");
            }
            Err(error) => {
                tracing::warn!(what = self.what, %error, "files changed but cannot be loaded; still using the previous version");
                state.failed = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("ef-watched-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn number_file(path: PathBuf) -> Watched<u32> {
        let p = path.clone();
        Watched::new("number", vec![path], Duration::ZERO, move || {
            let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            text.trim().parse().map_err(|e| format!("{}: {e}", p.display()))
        })
        .unwrap()
    }

    #[test]
    fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_previous_value() {
        let dir = dir("reload");
        let path = dir.join("n");
        std::fs::write(&path, "1").unwrap();
        let watched = number_file(path.clone());
        assert_eq!(*watched.current(), 1);
        // A rename over the file, as Kubernetes and cert-manager do: a new inode.
        std::fs::write(dir.join("n.new"), "22").unwrap();
        std::fs::rename(dir.join("n.new"), &path).unwrap();
        assert_eq!(*watched.current(), 22);
        std::fs::write(dir.join("n.new"), "not a number").unwrap();
        std::fs::rename(dir.join("n.new"), &path).unwrap();
        assert_eq!(*watched.current(), 22, "a broken file keeps the previous value");
        std::fs::write(dir.join("n.new"), "333").unwrap();
        std::fs::rename(dir.join("n.new"), &path).unwrap();
        assert_eq!(*watched.current(), 333, "the rest of the rotation is picked up");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unloadable_file_fails_at_start() {
        let path = dir("missing").join("absent");
        let p = path.clone();
        let error = Watched::new("number", vec![path], Duration::ZERO, move || {
            std::fs::read_to_string(&p).map_err(|e| format!("--number-file {}: {e}", p.display()))
        })
        .unwrap_err();
        assert!(error.starts_with("--number-file "), "{error}");
    }

    #[test]
    fn checks_are_spaced_by_check_every() {
        let dir = dir("spaced");
        let path = dir.join("n");
        std::fs::write(&path, "1").unwrap();
        let p = path.clone();
        let watched = Watched::new("number", vec![path.clone()], Duration::from_secs(3600), move || {
            std::fs::read_to_string(&p).map_err(|e| e.to_string())?.trim().parse::<u32>().map_err(|e| e.to_string())
        })
        .unwrap();
        std::fs::write(dir.join("n.new"), "2").unwrap();
        std::fs::rename(dir.join("n.new"), &path).unwrap();
        assert_eq!(*watched.current(), 1, "not compared again within check_every");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
