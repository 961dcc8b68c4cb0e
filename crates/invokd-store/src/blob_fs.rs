//! Blob storage in a local directory: write to a temporary file beside the target, fsync,
//! rename, fsync the directory (and, for a directory just made, its parent).

use std::{
    collections::HashSet,
    fs,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::blob::{BlobError, BlobStore, validate_key};

/// Blobs as files under a root directory. A key's first segment is a directory (a job's
/// files, removed together) and the rest of the key names the file, its segments joined by
/// [`JOIN`]: a job's first file makes one directory, not one per segment. Each directory made
/// costs what an fsync does on ext4, and its entry must be made durable too.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
    /// Directories this process is making and whose entries are not yet durable: a write that
    /// finds one already there makes its entry durable itself rather than trust a maker still
    /// on its way to the fsync.
    making: Arc<Mutex<HashSet<PathBuf>>>,
}

/// Temporary files start with this; no key may name one. Each is written in its target's own
/// directory: one shared directory for every write made the file system's inode allocation and
/// the directory's lock the bottleneck of a busy server.
const TMP_PREFIX: &str = ".tmp";

/// Joins a key's segments after the first into its file's name; no segment holds one
/// (`validate_key`), so two keys never share a file.
const JOIN: &str = "+";

impl LocalBlobStore {
    /// Opens (and creates) the directory. Leftover temporary files of a crashed write sit in
    /// their job's directory and go with it when retention removes the job's files.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        // Directories an earlier process made and did not make durable before it stopped.
        sync_dir(&root)?;
        // Where every temporary file went before they were written beside their targets.
        let old_tmp = root.join(TMP_PREFIX);
        if old_tmp.exists() {
            fs::remove_dir_all(&old_tmp)?;
        }
        Ok(Self {
            root,
            making: Arc::default(),
        })
    }

    fn check_key(key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        if key.split('/').any(|seg| seg.starts_with(TMP_PREFIX)) {
            return Err(BlobError::InvalidKey(key.to_owned()));
        }
        Ok(())
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, BlobError> {
        Self::check_key(key)?;
        Ok(match key.split_once('/') {
            Some((dir, rest)) => self.root.join(dir).join(file_name(rest)),
            None => self.root.join(key),
        })
    }

    /// Where a key's file was stored before: a directory per segment. Still read and removed.
    fn nested_path_of(&self, key: &str) -> Option<PathBuf> {
        (key.matches('/').count() > 1).then(|| self.root.join(key))
    }

    /// Makes `dir` (a directory of the root) if it is missing, and makes sure its entry is
    /// durable before a file goes in it.
    fn make_dir(&self, dir: &Path) -> std::io::Result<()> {
        if dir == self.root {
            return Ok(());
        }
        let making = || self.making.lock().unwrap_or_else(PoisonError::into_inner);
        // Made and marked under the lock, so a write that finds the directory knows whether
        // its maker is still on the way to the fsync.
        let (made, racing) = {
            let mut m = making();
            match fs::create_dir(dir) {
                Ok(()) => (m.insert(dir.to_owned()), false),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => (false, m.contains(dir)),
                Err(e) => return Err(e),
            }
        };
        if !made && !racing {
            return Ok(());
        }
        let durable = sync_dir(&self.root);
        if made {
            making().remove(dir);
        }
        durable
    }

    fn write_atomically(&self, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
        let parent = target.parent().unwrap_or(&self.root);
        self.make_dir(parent)?;
        let tmp = parent.join(format!("{TMP_PREFIX}-{:016x}", rand::random::<u64>()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, target)?;
        // The rename is durable only once the directory entry is.
        sync_dir(parent)
    }
}

/// The name, in its key's directory, of the file for the rest of the key.
fn file_name(rest: &str) -> String {
    rest.replace('/', JOIN)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let target = self.path_of(key)?;
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.write_atomically(&target, &bytes))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        let paths = [Some(self.path_of(key)?), self.nested_path_of(key)];
        for path in paths.into_iter().flatten() {
            match tokio::fs::read(&path).await {
                Ok(b) => return Ok(Some(Bytes::from(b))),
                Err(e) if is_missing(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        Self::check_key(prefix)?;
        let Some((dir, rest)) = prefix.split_once('/') else {
            return ignore_missing(tokio::fs::remove_dir_all(self.root.join(prefix)).await);
        };
        // Within a directory: the files whose names start with the rest of the prefix, and
        // what the nested layout kept under it.
        let (dir, start) = (self.root.join(dir), format!("{}{JOIN}", file_name(rest)));
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(entries) => entries,
            Err(e) => return ignore_missing(Err(e)),
        };
        while let Some(entry) = entries.next_entry().await? {
            if entry.file_name().to_string_lossy().starts_with(&start) {
                ignore_missing(tokio::fs::remove_file(entry.path()).await)?;
            }
        }
        let nested = self.root.join(prefix);
        if tokio::fs::metadata(&nested).await.is_ok_and(|m| m.is_dir()) {
            ignore_missing(tokio::fs::remove_dir_all(&nested).await)?;
        }
        Ok(())
    }

    async fn check(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(&self.root).await?;
        Ok(())
    }
}

/// Whether a failed lookup only says the path is not there; under the nested layout, a
/// segment may now name a file.
fn is_missing(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn ignore_missing(r: std::io::Result<()>) -> Result<(), BlobError> {
    match r {
        Err(e) if is_missing(&e) => Ok(()),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn put_then_get_and_refuse_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobStore::open(dir.path()).unwrap();
        s.put("j/1/0.png", Bytes::from_static(b"abc"))
            .await
            .unwrap();
        assert_eq!(
            s.get("j/1/0.png").await.unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        assert!(s.get("j/1/1.png").await.unwrap().is_none());
        assert!(s.get("../etc/passwd").await.is_err());
        assert!(s.put(".tmp/x", Bytes::new()).await.is_err());
        assert!(s.get("j/1/.tmp-0123456789abcdef").await.is_err());
        assert!(s.put("j/1+0.png", Bytes::new()).await.is_err());
        // One directory for the job, and only the file in it: no temporary file.
        assert_eq!(names(dir.path()), ["j"]);
        assert_eq!(names(&dir.path().join("j")), ["1+0.png"]);
    }

    #[tokio::test]
    async fn keys_that_share_a_directory_keep_their_own_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobStore::open(dir.path()).unwrap();
        for (key, bytes) in [("j/1", "a"), ("j/1/0", "b"), ("j/10", "c"), ("top", "d")] {
            s.put(key, Bytes::from(bytes)).await.unwrap();
        }
        for (key, bytes) in [("j/1", "a"), ("j/1/0", "b"), ("j/10", "c"), ("top", "d")] {
            assert_eq!(s.get(key).await.unwrap().unwrap(), Bytes::from(bytes));
        }
        // A prefix takes the keys under it, not its namesakes.
        s.delete_prefix("j/1").await.unwrap();
        assert!(s.get("j/1/0").await.unwrap().is_none());
        assert_eq!(s.get("j/1").await.unwrap().unwrap(), Bytes::from("a"));
        assert_eq!(s.get("j/10").await.unwrap().unwrap(), Bytes::from("c"));
        s.delete_prefix("j").await.unwrap();
        assert!(s.get("j/1").await.unwrap().is_none());
        assert_eq!(names(dir.path()), ["top"]);
        s.delete_prefix("nothing/here").await.unwrap();
        s.delete_prefix("nothing").await.unwrap();
        s.delete_prefix("top").await.unwrap();
        assert_eq!(s.get("top").await.unwrap().unwrap(), Bytes::from("d"));
    }

    #[tokio::test]
    async fn files_stored_a_directory_per_segment_are_still_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("j/1")).unwrap();
        fs::write(dir.path().join("j/1/0.png"), b"old").unwrap();
        let s = LocalBlobStore::open(dir.path()).unwrap();
        assert_eq!(
            s.get("j/1/0.png").await.unwrap().unwrap(),
            Bytes::from_static(b"old")
        );
        s.put("j/2/0.png", Bytes::from_static(b"new"))
            .await
            .unwrap();
        s.delete_prefix("j/1").await.unwrap();
        assert!(s.get("j/1/0.png").await.unwrap().is_none());
        assert_eq!(names(&dir.path().join("j")), ["2+0.png"]);
    }

    #[tokio::test]
    async fn concurrent_writes_to_one_new_directory_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalBlobStore::open(dir.path()).unwrap();
        let writes = (0..16).map(|i| {
            let s = s.clone();
            async move {
                s.put(&format!("j/1/{i}.png"), Bytes::from(vec![i; 4]))
                    .await
            }
        });
        for r in futures::future::join_all(writes).await {
            r.unwrap();
        }
        assert_eq!(names(&dir.path().join("j")).len(), 16);
        assert!(s.making.lock().unwrap().is_empty());
    }
}
