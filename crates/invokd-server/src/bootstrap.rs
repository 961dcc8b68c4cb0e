//! Start-up of the embedded setup: the data directory and its lock, the URL-signing secret, and
//! the first access key.

use std::{
    fs::{self, File},
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use chrono::Utc;
use invokd_core::{
    keys::{KeyHash, KeyRecord, generate_secret},
    store::Store,
};

/// The data directory, locked for this process: a second server on the same directory is refused,
/// which is what lets start-up requeue every job the last process left running.
pub struct DataDir {
    pub root: PathBuf,
    _lock: File,
}

const LOCK_FILE: &str = "invokd.lock";
const SIGNING_KEY_FILE: &str = "url-signing.key";
const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Admin tokens start with this, unlike access keys, so the two are never confused.
pub const ADMIN_TOKEN_PREFIX: &str = "invka_";

impl DataDir {
    pub fn open(root: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(root)
            .with_context(|| format!("cannot create data directory {}", root.display()))?;
        let lock_path = root.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("cannot open {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            bail!(
                "another invokd process is using the data directory {}; stop it or pick another --data-dir",
                root.display()
            );
        }
        Ok(Self {
            root: root.to_path_buf(),
            _lock: lock,
        })
    }

    /// The admin token: `configured` (INVOKD_ADMIN_TOKEN) if given, else the one kept in the
    /// data directory, else a new one. The second value says it was created now (show it once).
    pub fn admin_token(&self, configured: Option<&str>) -> anyhow::Result<(String, bool)> {
        if let Some(t) = configured {
            if t.trim().len() < 16 {
                bail!("INVOKD_ADMIN_TOKEN must be at least 16 characters");
            }
            return Ok((t.trim().to_owned(), false));
        }
        let path = self.root.join(ADMIN_TOKEN_FILE);
        if path.exists() {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return Ok((text.trim().to_owned(), false));
        }
        let token =
            generate_secret().replacen(invokd_core::keys::KEY_PREFIX, ADMIN_TOKEN_PREFIX, 1);
        write_private(&path, token.as_bytes())?;
        Ok((token, true))
    }

    /// The secret that signs file URLs, created on first start and kept so URLs survive restarts.
    pub fn signing_secret(&self) -> anyhow::Result<Vec<u8>> {
        let path = self.root.join(SIGNING_KEY_FILE);
        if path.exists() {
            let text = fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            return hex::decode(text.trim())
                .with_context(|| format!("{} is not hex", path.display()));
        }
        let secret: [u8; 32] = rand::random();
        write_private(&path, hex::encode(secret).as_bytes())?;
        Ok(secret.to_vec())
    }
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = File::options();
    opts.create(true).truncate(true).write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// With no key in the store, creates the first one: the given bootstrap key, or a new one, which
/// is returned so the caller can show it once.
pub async fn first_key(
    store: &dyn Store,
    bootstrap: Option<&str>,
) -> anyhow::Result<Option<String>> {
    if store.count_keys().await? > 0 {
        if let Some(k) = bootstrap
            && store.find_key(&KeyHash::of(k)).await?.is_none()
        {
            tracing::warn!("INVOKD_BOOTSTRAP_KEY is ignored: the store already has keys");
        }
        return Ok(None);
    }
    match bootstrap {
        Some(k) => {
            if k.trim().len() < 16 {
                bail!("INVOKD_BOOTSTRAP_KEY must be at least 16 characters");
            }
            store
                .insert_key(KeyRecord::for_secret(
                    k.trim(),
                    "bootstrap",
                    Some("default"),
                    Utc::now(),
                ))
                .await?;
            tracing::info!("created the first access key from INVOKD_BOOTSTRAP_KEY");
            Ok(None)
        }
        None => {
            let secret = generate_secret();
            store
                .insert_key(KeyRecord::for_secret(
                    &secret,
                    "first key",
                    Some("default"),
                    Utc::now(),
                ))
                .await?;
            Ok(Some(secret))
        }
    }
}
