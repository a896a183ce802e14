//! The subscriber's ack keys read from their files (`--ack-key-file`, `--ack-key-previous-file`)
//! and reloaded when the files change, so a key rotation needs no restart.
//!
//! How: the keys live in a [`Watched`] (the one way configuration is reloaded from files), which
//! the broker asks through its [`AckKeySource`] trait whenever it signs or verifies an ack id. The
//! files are compared at most once per [`CHECK_EVERY`]. A new current key file that is missing,
//! unreadable or too short keeps the keys in use and logs a warning (see [`crate::watched`]). A
//! previous-key file that is absent or empty means "no previous key": that is how the last step
//! of a rotation drops it without a restart (delete or empty the file, or remove the key from
//! the mounted Secret).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use eventflow_broker::{AckKeySource, AckKeys};

use crate::watched::Watched;

/// Least time between two looks at the key files: ack ids are signed on every delivery, so not a
/// `stat` each time; a rotated key is in force within this.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// The ack keys of `current` and, if given and present, `previous`, reloaded when the files
/// change. Fails with one line naming the flag when the keys cannot be loaded at start.
pub fn watch(current: PathBuf, previous: Option<PathBuf>) -> Result<Arc<dyn AckKeySource>, String> {
    watch_every(current, previous, CHECK_EVERY)
}

/// [`watch`], looking at the files at most once per `check_every`.
fn watch_every(
    current: PathBuf,
    previous: Option<PathBuf>,
    check_every: Duration,
) -> Result<Arc<dyn AckKeySource>, String> {
    let paths = std::iter::once(current.clone()).chain(previous.clone()).collect();
    let configured_previous = previous.clone();
    let watched = Watched::new("ack keys", paths, check_every, move || load(&current, previous.as_deref()))?;
    if let Some(path) = configured_previous.filter(|_| !watched.current().has_previous()) {
        // Fine during the last step of a rotation; a typo otherwise.
        tracing::warn!(file = %path.display(), "--ack-key-previous-file is absent or empty: no previous ack key accepted");
    }
    Ok(Arc::new(watched))
}

/// Reads the keys once: the current key is required; the previous one is optional.
pub fn load(current: &Path, previous: Option<&Path>) -> Result<AckKeys, String> {
    let read = |flag: &str, path: &Path| {
        let bytes = std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))?;
        Ok::<_, String>(bytes.trim_ascii().to_vec())
    };
    let current = read("--ack-key-file", current)?;
    let previous = match previous {
        Some(path) if path.exists() => Some(read("--ack-key-previous-file", path)?).filter(|key| !key.is_empty()),
        _ => None,
    };
    AckKeys::new(&current, previous.as_deref()).map_err(|e| e.to_string())
}

impl AckKeySource for Watched<AckKeys> {
    fn current(&self) -> Arc<AckKeys> {
        Watched::current(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces `path` with `key` by a rename, as a Secret update does.
    fn replace(path: &Path, key: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, format!("{key}\n")).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// Whether `keys` accept an ack id signed with `key`.
    fn accepts(keys: &AckKeys, key: &str) -> bool {
        let signer = AckKeys::new(key.as_bytes(), None).unwrap();
        let id = eventflow_broker::ack_id::AckId {
            stream: "s".into(),
            subscription: "sub".into(),
            source: eventflow_broker::Source::Stream,
            entry_id: "1-1".into(),
            consumer: "c".into(),
            attempt: 1,
            delivered_ms: 1,
            traceparent: None,
        };
        eventflow_broker::ack_id::AckId::decode(&id.encode(&signer), keys).is_some()
    }

    #[test]
    fn a_rotation_is_followed_and_a_bad_key_file_keeps_the_keys_in_use() {
        let dir = std::env::temp_dir().join(format!("ef-ack-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (current, previous) = (dir.join("current"), dir.join("previous"));
        let (a, b) = ("a1".repeat(32), "b2".repeat(32));
        replace(&current, &a);
        let keys = watch_every(current.clone(), Some(previous.clone()), Duration::ZERO).unwrap();
        assert!(accepts(&keys.current(), &a) && !keys.current().has_previous(), "absent previous file: none");

        replace(&previous, &a);
        replace(&current, &b);
        assert!(accepts(&keys.current(), &b) && accepts(&keys.current(), &a), "B current, A previous");

        replace(&current, "too short");
        assert!(accepts(&keys.current(), &b) && accepts(&keys.current(), &a), "a bad key file keeps the keys");

        replace(&current, &b);
        replace(&previous, "");
        assert!(accepts(&keys.current(), &b) && !accepts(&keys.current(), &a), "an empty previous file drops A");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
