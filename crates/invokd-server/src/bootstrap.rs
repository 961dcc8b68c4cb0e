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
/// Names the data directory in the lease owners of its processes, across restarts.
const INSTANCE_FILE: &str = "instance-id";
/// Set by the process that creates the first access key, so that only one does.
const FIRST_KEY_SETTING: &str = "first-key-created";
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

    /// The data directory's own id, made on its first start: every process that runs on it
    /// records leases as `<id>/...`, so that a start takes back the leases of its previous
    /// lives and no one else's.
    pub fn instance_id(&self) -> anyhow::Result<String> {
        let path = self.root.join(INSTANCE_FILE);
        match fs::read_to_string(&path) {
            Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
        let id = format!("invokd-{}", uuid::Uuid::now_v7().simple());
        write_private(&path, id.as_bytes())?;
        Ok(id)
    }
}

/// Where the secrets every process of a deployment shares are kept: files in the data directory
/// (the embedded setup: one process), or the store itself when replicas share it, so that a URL
/// signed by one replica is good on all of them and the webhook key is the same everywhere.
pub enum SecretHome<'a> {
    DataDir(&'a Path),
    Store(&'a dyn Store),
}

impl SecretHome<'_> {
    /// The secret called `name`, or `make()` kept under that name if there is none yet (the first
    /// of concurrent starters wins, the others read its value). `true` when it was made now.
    pub async fn get_or_create(
        &self,
        name: &str,
        make: impl FnOnce() -> String,
    ) -> anyhow::Result<(String, bool)> {
        match self {
            Self::DataDir(root) => {
                let path = root.join(name);
                if path.exists() {
                    let text = fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    return Ok((text.trim().to_owned(), false));
                }
                let value = make();
                write_private(&path, value.as_bytes())?;
                Ok((value, true))
            }
            Self::Store(store) => Ok(store
                .setting_or_insert(name, &make())
                .await
                .with_context(|| format!("cannot read or store the shared secret {name}"))?),
        }
    }

    /// The admin token: `configured` (INVOKD_ADMIN_TOKEN) if given, else the kept one, else a new
    /// one. The second value says it was created now (show it once).
    pub async fn admin_token(&self, configured: Option<&str>) -> anyhow::Result<(String, bool)> {
        if let Some(t) = configured {
            if t.trim().len() < 16 {
                bail!("INVOKD_ADMIN_TOKEN must be at least 16 characters");
            }
            return Ok((t.trim().to_owned(), false));
        }
        self.get_or_create(ADMIN_TOKEN_FILE, || {
            generate_secret().replacen(invokd_core::keys::KEY_PREFIX, ADMIN_TOKEN_PREFIX, 1)
        })
        .await
    }

    /// The secret that signs file URLs, created on first start and kept so URLs survive restarts.
    pub async fn signing_secret(&self) -> anyhow::Result<Vec<u8>> {
        self.random_key(SIGNING_KEY_FILE).await.map(Vec::from)
    }

    /// 32 random bytes kept in hex under `name`.
    pub async fn random_key(&self, name: &str) -> anyhow::Result<[u8; 32]> {
        let (text, _) = self
            .get_or_create(name, || hex::encode(rand::random::<[u8; 32]>()))
            .await?;
        hex::decode(&text)
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("the kept secret {name} is not a 32-byte hex key"))
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
/// is returned so the caller can show it once. Of replicas starting together on a shared store,
/// only the one that records the first start makes it.
pub async fn first_key(
    store: &dyn Store,
    bootstrap: Option<&str>,
) -> anyhow::Result<Option<String>> {
    if let Some(k) = bootstrap
        && k.trim().len() < 16
    {
        bail!("INVOKD_BOOTSTRAP_KEY must be at least 16 characters");
    }
    let claimed = store.count_keys().await? == 0
        && store
            .setting_or_insert(FIRST_KEY_SETTING, &Utc::now().to_rfc3339())
            .await?
            .1;
    if !claimed {
        if let Some(k) = bootstrap
            && store.find_key(&KeyHash::of(k.trim())).await?.is_none()
        {
            tracing::warn!("INVOKD_BOOTSTRAP_KEY is ignored: the store already has keys");
        }
        return Ok(None);
    }
    match bootstrap {
        Some(k) => {
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
