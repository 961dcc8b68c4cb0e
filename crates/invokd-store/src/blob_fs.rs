//! Blob storage in a local directory: write to a temporary file beside the target, fsync,
//! rename, fsync the directory.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::blob::{BlobError, BlobStore, validate_key};

/// Blobs as files under a root directory; the key is the relative path.
#[derive(Debug, Clone)]
pub struct LocalBlobStore {
    root: PathBuf,
}

/// Temporary files start with this; no key may name one. Each is written in its target's own
/// directory: one shared directory for every write made the file system's inode allocation and
/// the directory's lock the bottleneck of a busy server.
const TMP_PREFIX: &str = ".tmp";

impl LocalBlobStore {
    /// Opens (and creates) the directory. Leftover temporary files of a crashed write sit in
    /// their job's directory and go with it when retention removes the job's files.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, BlobError> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        // Where every temporary file went before they were written beside their targets.
        let old_tmp = root.join(TMP_PREFIX);
        if old_tmp.exists() {
            fs::remove_dir_all(&old_tmp)?;
        }
        Ok(Self { root })
    }

    fn path_of(&self, key: &str) -> Result<PathBuf, BlobError> {
        validate_key(key)?;
        if key.split('/').any(|seg| seg.starts_with(TMP_PREFIX)) {
            return Err(BlobError::InvalidKey(key.to_owned()));
        }
        Ok(self.root.join(key))
    }
}

fn write_atomically(root: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = target.parent().unwrap_or(root);
    fs::create_dir_all(parent)?;
    let tmp = parent.join(format!("{TMP_PREFIX}-{:016x}", rand::random::<u64>()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, target)?;
    // The rename is durable only once the directory entry is.
    fs::File::open(parent)?.sync_all()
}

#[async_trait]
impl BlobStore for LocalBlobStore {
    async fn put(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let target = self.path_of(key)?;
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || write_atomically(&root, &target, &bytes))
            .await
            .map_err(|e| BlobError::Io(std::io::Error::other(e)))??;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, BlobError> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), BlobError> {
        let dir = self.path_of(prefix)?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn check(&self) -> Result<(), BlobError> {
        tokio::fs::metadata(&self.root).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Only the file itself is left in its directory: no temporary file.
        let names: Vec<_> = fs::read_dir(dir.path().join("j/1"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["0.png"]);
    }
}
