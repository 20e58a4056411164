//! An opt-in snapshot file: a view's last synced instances on disk, for a start while the
//! registry cannot be reached.
//!
//! Nacos (`FailoverReactor`, `namingLoadCacheAtStart`), nacos-sdk-rust (`load_cache_at_start`)
//! and Polaris (`cache_persist`) keep the last service list on disk for exactly this case: a
//! gateway restarted during a registry outage would otherwise have no instance at all until the
//! registry is back, although it was serving fine a moment before.
//!
//! - **Writing.** A task of its own (owned by the discovery's handles, like the feed) follows
//!   the view and writes it when it is synced and has changed, at most once per
//!   [`interval`](SnapshotFile::interval), never from the feed itself: the encoding and the I/O
//!   run on tokio's blocking pool. A write is atomic: a temporary file in the same directory,
//!   fsync, rename over the old one, fsync of the directory. A crash leaves the old file or the
//!   new one, never a mix.
//! - **Reading.** At start, before the first list, the file is read (on the blocking pool) and,
//!   when it is accepted, its instances are served at once, flagged stale
//!   ([`StoreStatus::seeded`](crate::StoreStatus::seeded) gives its revision and age). The
//!   first successful list replaces them by exact difference: subscribers see only what really
//!   changed. A missing, truncated, corrupt, foreign-version or other-service file is refused
//!   with a `tracing` warning and a reason ([`SnapshotFileStatus::load`]), and the view starts
//!   empty as without a file. Nothing here panics or holds the start up.

mod format;

pub use format::{SnapshotRefusal, FORMAT_VERSION};

use crate::instance::ServiceInstance;
use crate::store::{Seeded, Store};
use format::{Decoded, Identity};
use registry_api::Revision;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// Where a discovery keeps its snapshot file and how often it writes it. Off unless set in
/// [`DiscoveryOptions::snapshot_file`](super::DiscoveryOptions::snapshot_file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The file, or a directory holding one file per service.
    pub path: SnapshotPath,
    /// At most one write per this long (default 10 s): the file lags the view by up to this.
    pub interval: Duration,
    /// A file older than this is refused at start (default: none, any age is served, flagged
    /// stale with its age).
    pub max_age: Option<Duration>,
}

/// Where the snapshot file is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotPath {
    /// This file, for one discovery.
    File(PathBuf),
    /// This directory, one file per service: `<dir>/<service>.json` (characters other than
    /// ASCII letters, digits, `.`, `_` and `-` written as `%XX`). What a [`DiscoveryHub`]
    /// needs.
    ///
    /// [`DiscoveryHub`]: super::DiscoveryHub
    Dir(PathBuf),
}

impl SnapshotFile {
    /// The default interval between writes.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

    /// A snapshot in the file `path`.
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self::new(SnapshotPath::File(path.into()))
    }

    /// Snapshots in the directory `dir`, one file per service (for a hub).
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Self::new(SnapshotPath::Dir(dir.into()))
    }

    fn new(path: SnapshotPath) -> Self {
        SnapshotFile {
            path,
            interval: Self::DEFAULT_INTERVAL,
            max_age: None,
        }
    }

    /// Sets the interval between writes.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Refuses files older than `max_age`.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// The file of `service`'s view.
    pub fn path_for(&self, service: &str) -> PathBuf {
        match &self.path {
            SnapshotPath::File(path) => path.clone(),
            SnapshotPath::Dir(dir) => {
                let mut name = String::with_capacity(service.len() + 5);
                for byte in service.bytes() {
                    match byte {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' => {
                            name.push(char::from(byte))
                        }
                        other => name.push_str(&format!("%{other:02X}")),
                    }
                }
                name.push_str(".json");
                dir.join(name)
            }
        }
    }
}

/// What became of the file at start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SnapshotLoad {
    /// Not read yet (the discovery's task reads it first thing).
    #[default]
    Pending,
    /// Read and served until the first list replaced it.
    Loaded {
        /// The revision the file's view reflected.
        revision: Revision,
        /// How many instances it held.
        instances: usize,
        /// When it was written.
        saved_at: SystemTime,
    },
    /// Not used, for this reason (also logged as a warning).
    Refused(SnapshotRefusal),
}

/// The state of a discovery's snapshot file: how the start went and how writing goes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SnapshotFileStatus {
    /// The file.
    pub path: PathBuf,
    /// What became of it at start.
    pub load: SnapshotLoad,
    /// Successful writes since start.
    pub writes: u64,
    /// When the last successful write happened.
    pub last_written: Option<SystemTime>,
    /// The revision the last write saved.
    pub last_written_revision: Option<Revision>,
    /// Why the last write failed (cleared by the next success), or how the writing task died.
    pub last_error: Option<String>,
    /// The writing task has ended (shut down with the discovery, or died: then `last_error`
    /// says how).
    pub stopped: bool,
}

/// What the discovery's handles, feed and writer share about the file.
#[derive(Debug)]
pub(super) struct FileShared {
    pub(super) options: SnapshotFile,
    pub(super) path: PathBuf,
    identity: Identity,
    pub(super) status: watch::Sender<SnapshotFileStatus>,
}

impl FileShared {
    pub(super) fn new(options: SnapshotFile, service: &str, prefix: String) -> Arc<Self> {
        let path = options.path_for(service);
        let (status, _) = watch::channel(SnapshotFileStatus {
            path: path.clone(),
            ..SnapshotFileStatus::default()
        });
        Arc::new(FileShared {
            options,
            path,
            identity: Identity {
                service: service.to_owned(),
                prefix,
            },
            status,
        })
    }

    /// Reads the file and, when it is accepted, returns what to seed the store with (the feed
    /// applies it before its first list); `None` when refused.
    pub(super) async fn seed(&self) -> Option<Seed> {
        let path = self.path.clone();
        let identity = self.identity.clone();
        let max_age = self.options.max_age;
        let read = tokio::task::spawn_blocking(move || load(&path, &identity, max_age)).await;
        let outcome = match read {
            Ok(outcome) => outcome,
            Err(e) => Err(SnapshotRefusal::Unreadable(format!("the read failed: {e}"))),
        };
        match outcome {
            Ok(decoded) => {
                let count = decoded.instances.len();
                let revision = Revision(decoded.revision);
                tracing::info!(
                    path = %self.path.display(),
                    %revision,
                    instances = count,
                    age = ?decoded.saved_at.elapsed().unwrap_or_default(),
                    "serving the snapshot file's instances, flagged stale, until the first list"
                );
                let changes = decoded
                    .instances
                    .into_iter()
                    .map(|(id, instance)| (Arc::from(id), Some(instance)))
                    .collect();
                self.status.send_modify(|status| {
                    status.load = SnapshotLoad::Loaded {
                        revision,
                        instances: count,
                        saved_at: decoded.saved_at,
                    }
                });
                Some(Seed {
                    changes,
                    seeded: Seeded {
                        revision,
                        saved_at: decoded.saved_at,
                    },
                })
            }
            Err(refusal) => {
                tracing::warn!(path = %self.path.display(), reason = %refusal, "snapshot file refused; the view starts empty");
                self.status
                    .send_modify(|status| status.load = SnapshotLoad::Refused(refusal));
                None
            }
        }
    }
}

/// An accepted file: the instances to put in the store, and what the store's status says of
/// them.
pub(super) struct Seed {
    pub(super) changes: Vec<(Arc<str>, Option<ServiceInstance>)>,
    pub(super) seeded: Seeded,
}

/// Reads and checks the file (blocking).
fn load(
    path: &Path,
    identity: &Identity,
    max_age: Option<Duration>,
) -> Result<Decoded, SnapshotRefusal> {
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(SnapshotRefusal::Missing),
        Err(e) => return Err(SnapshotRefusal::Unreadable(e.to_string())),
    };
    let bytes = file
        .metadata()
        .map_err(|e| SnapshotRefusal::Unreadable(e.to_string()))?
        .len();
    if bytes > format::MAX_FILE_BYTES {
        return Err(SnapshotRefusal::TooLarge { bytes });
    }
    let mut content = Vec::with_capacity(usize::try_from(bytes).unwrap_or(0));
    std::io::Read::read_to_end(
        &mut std::io::Read::take(file, format::MAX_FILE_BYTES + 1),
        &mut content,
    )
    .map_err(|e| SnapshotRefusal::Unreadable(e.to_string()))?;
    format::decode(&content, identity, SystemTime::now(), max_age)
}

/// Writes `bytes` to `path` atomically (blocking): a temporary file beside it, fsync, rename,
/// fsync of the directory.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut file = tempfile::Builder::new()
        .prefix(".snapshot-")
        .suffix(".tmp")
        .tempfile_in(&dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    // On failure the temporary file is removed when `persist`'s error is dropped.
    file.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the directory is: without this a crash can bring the
    // old file back (or none).
    #[cfg(unix)]
    std::fs::File::open(&dir)?.sync_all()?;
    Ok(())
}

/// The writing task: follows the store, writes it when synced and changed, at most once per
/// interval, until `stop` says so or its sender goes.
pub(super) async fn keep_written(
    file: Arc<FileShared>,
    store: Store<ServiceInstance>,
    mut stop: watch::Receiver<bool>,
) {
    let _stopped = Stopped(file.clone());
    let mut changes = store.status_changes();
    // (version, revision) of the last write: nothing new, nothing to write.
    let mut written: Option<(u64, Revision)> = None;
    let mut next_allowed = Instant::now();
    loop {
        // Wait for a synced view that differs from what was written.
        loop {
            let worth = {
                let status = changes.borrow_and_update();
                status.synced && written != Some((status.version, status.revision))
            };
            if worth {
                break;
            }
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => return,
                changed = changes.changed() => if changed.is_err() { return },
            }
        }
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep_until(next_allowed) => {}
        }
        // The latest state after the wait: a burst of changes costs one write.
        let status = store.status();
        if !status.synced {
            continue;
        }
        let snapshot = store.snapshot();
        let key = (snapshot.version(), snapshot.revision());
        if written == Some(key) {
            continue;
        }
        next_allowed = crate::backoff::deadline_after(file.options.interval);
        let (path, identity) = (file.path.clone(), file.identity.clone());
        let job = tokio::task::spawn_blocking(move || {
            let instances: BTreeMap<String, ServiceInstance> = snapshot
                .iter()
                .map(|(id, instance)| (id.to_owned(), instance.clone()))
                .collect();
            let saved_at = SystemTime::now();
            let bytes = format::encode(&identity, snapshot.revision().0, saved_at, instances);
            write_atomically(&path, &bytes).map(|()| saved_at)
        });
        let outcome = match job.await {
            Ok(outcome) => outcome.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the write failed: {e}")),
        };
        match outcome {
            Ok(saved_at) => {
                written = Some(key);
                file.status.send_modify(|status| {
                    status.writes += 1;
                    status.last_written = Some(saved_at);
                    status.last_written_revision = Some(key.1);
                    status.last_error = None;
                });
            }
            Err(error) => {
                tracing::warn!(path = %file.path.display(), %error, "could not write the snapshot file; trying again after the interval");
                file.status
                    .send_modify(|status| status.last_error = Some(error));
            }
        }
    }
}

/// Marks the writer stopped however its task ends.
struct Stopped(Arc<FileShared>);

impl Drop for Stopped {
    fn drop(&mut self) {
        self.0.status.send_modify(|status| status.stopped = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_holds_one_file_per_service_with_odd_characters_escaped() {
        let dir = SnapshotFile::in_dir("/var/cache/gw");
        assert_eq!(
            dir.path_for("hello"),
            PathBuf::from("/var/cache/gw/hello.json")
        );
        assert_eq!(
            dir.path_for("a b\\..é"),
            PathBuf::from("/var/cache/gw/a%20b%5C..%C3%A9.json")
        );
        let file = SnapshotFile::at("/tmp/x.json");
        assert_eq!(file.path_for("anything"), PathBuf::from("/tmp/x.json"));
    }

    #[test]
    fn a_write_replaces_the_file_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("view.json");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("view.json")]);
    }

    #[test]
    fn a_missing_file_and_a_directory_in_its_place_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let identity = Identity {
            service: "hello".to_owned(),
            prefix: "services/hello/".to_owned(),
        };
        assert_eq!(
            load(&dir.path().join("none.json"), &identity, None).unwrap_err(),
            SnapshotRefusal::Missing
        );
        assert!(matches!(
            load(dir.path(), &identity, None),
            Err(SnapshotRefusal::Unreadable(_) | SnapshotRefusal::Corrupt(_))
        ));
    }
}
