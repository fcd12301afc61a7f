//! Content-addressed storage of original documents (CDA2 XML, PDF, FHIR document Bundles): a
//! blob's name is the SHA-256 of its bytes, so storing is idempotent and a blob written before a
//! failed transaction is harmless (it is simply never referenced).
//!
//! Backends: a folder on disk, any `object_store` (S3 and compatible), memory for tests. Errors
//! are storage errors ([`StoreError`]): the app layer treats a blob store that cannot be reached
//! or is full as it treats the database.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use fascicolo_store::StoreError;

/// What a blob store answers.
pub type BlobResult<T> = Result<T, StoreError>;

/// Where originals live.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores a blob under its SHA-256.
    /// Store a blob. Storing one that exists refreshes its time, so a sweep that began before
    /// a publication reused it does not take it away (see [`BlobStore::written_before`]).
    async fn put_blob(&self, blob: &Blob<'_>) -> BlobResult<()>;
    async fn get(&self, sha256: &str) -> BlobResult<Option<Vec<u8>>>;
    /// The blobs last written before `before_ms` (ms since the epoch); partial writes left by a
    /// crash that are that old are removed on the way.
    async fn written_before(&self, before_ms: i64) -> BlobResult<Vec<String>>;
    /// Remove a blob (absent is fine).
    async fn delete(&self, sha256: &str) -> BlobResult<()>;

    /// Stores `bytes` under their SHA-256 (hex) and returns it.
    async fn put(&self, bytes: &[u8]) -> BlobResult<String> {
        let blob = Blob::new(bytes);
        self.put_blob(&blob).await?;
        Ok(blob.sha256)
    }
}

/// Bytes with their SHA-256, computed once here (so a caller that needs the hash before storing
/// does not hash a large document twice, and a store never takes a hash it did not compute).
#[derive(Debug)]
pub struct Blob<'a> {
    bytes: &'a [u8],
    sha256: String,
}

impl<'a> Blob<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, sha256: sha256_hex(bytes) }
    }

    /// The SHA-256 of the bytes, as lowercase hex.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// The SHA-256 of `bytes`, as lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn valid_hash(h: &str) -> bool {
    h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Blobs in a local folder: `<root>/sha256/ab/cdef...`.
#[derive(Debug, Clone)]
pub struct FolderBlobs {
    root: PathBuf,
}

impl FolderBlobs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.root.join("sha256").join(&hash[..2]).join(&hash[2..])
    }
}

fn io(e: std::io::Error) -> StoreError {
    let msg = format!("blob store: {e}");
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StoreError::Full(msg),
        _ => StoreError::Backend(msg),
    }
}

#[async_trait::async_trait]
impl BlobStore for FolderBlobs {
    async fn put_blob(&self, blob: &Blob<'_>) -> BlobResult<()> {
        let path = self.path(blob.sha256());
        let dir = path.parent().map(PathBuf::from).unwrap_or_else(|| self.root.clone());
        // write aside, then rename: a reader never sees half a blob
        let tmp = dir.join(format!(".{}.{}", &blob.sha256()[2..], uuid::Uuid::new_v4()));
        let bytes = blob.bytes().to_vec();
        // one trip to the blocking pool for the whole sequence
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if path.try_exists()? {
                std::fs::File::options().append(true).open(&path)?.set_modified(std::time::SystemTime::now())?;
                return Ok(());
            }
            std::fs::create_dir_all(&dir)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, &path)
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)
    }

    async fn get(&self, sha256: &str) -> BlobResult<Option<Vec<u8>>> {
        if !valid_hash(sha256) {
            return Ok(None);
        }
        match tokio::fs::read(self.path(sha256)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    async fn written_before(&self, before_ms: i64) -> BlobResult<Vec<String>> {
        let root = self.root.join("sha256");
        let before = std::time::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(before_ms).unwrap_or(0));
        tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let mut old = Vec::new();
            let Ok(dirs) = std::fs::read_dir(&root) else { return Ok(old) };
            for dir in dirs {
                let dir = dir?;
                let prefix = dir.file_name().to_string_lossy().to_string();
                if !dir.file_type()?.is_dir() {
                    continue;
                }
                for f in std::fs::read_dir(dir.path())? {
                    let f = f?;
                    let name = f.file_name().to_string_lossy().to_string();
                    let modified = f.metadata()?.modified()?;
                    if modified >= before {
                        continue;
                    }
                    if name.starts_with('.') {
                        // a write that never got its rename: a crash mid-publication
                        let _ = std::fs::remove_file(f.path());
                    } else if valid_hash(&format!("{prefix}{name}")) {
                        old.push(format!("{prefix}{name}"));
                    }
                }
            }
            Ok(old)
        })
        .await
        .map_err(|e| io(std::io::Error::other(e)))?
        .map_err(io)
    }

    async fn delete(&self, sha256: &str) -> BlobResult<()> {
        if !valid_hash(sha256) {
            return Ok(());
        }
        match tokio::fs::remove_file(self.path(sha256)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(e)),
        }
    }
}

/// Blobs in any object store: S3 and S3-compatible services (MinIO, Ceph...) in production,
/// `<prefix>/sha256/ab/cdef...` as in the folder store.
#[derive(Debug)]
pub struct ObjectBlobs {
    store: std::sync::Arc<dyn object_store::ObjectStore>,
    prefix: String,
}

impl ObjectBlobs {
    pub fn new(store: std::sync::Arc<dyn object_store::ObjectStore>, prefix: &str) -> Self {
        Self { store, prefix: prefix.trim_matches('/').to_string() }
    }

    /// An S3 bucket from a URL (`s3://bucket/prefix`), with the standard AWS environment
    /// variables for credentials, region and endpoint (`AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` and `AWS_ALLOW_HTTP` for MinIO).
    pub fn s3(url: &str) -> BlobResult<Self> {
        let parsed = url
            .strip_prefix("s3://")
            .ok_or_else(|| StoreError::Backend(format!("the blob store URL must start with s3:// (got {url})")))?;
        let (bucket, prefix) = parsed.split_once('/').unwrap_or((parsed, ""));
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| StoreError::Backend(format!("the S3 blob store is not configured: {e}")))?;
        Ok(Self::new(std::sync::Arc::new(store), prefix))
    }

    fn path(&self, hash: &str) -> object_store::path::Path {
        let rel = format!("sha256/{}/{}", &hash[..2], &hash[2..]);
        if self.prefix.is_empty() {
            object_store::path::Path::from(rel)
        } else {
            object_store::path::Path::from(format!("{}/{rel}", self.prefix))
        }
    }
}

fn remote(e: object_store::Error) -> StoreError {
    StoreError::Backend(format!("blob store: {e}"))
}

#[async_trait::async_trait]
impl BlobStore for ObjectBlobs {
    async fn put_blob(&self, blob: &Blob<'_>) -> BlobResult<()> {
        let path = self.path(blob.sha256());
        // a PUT of an object is atomic: readers see all of it or nothing; a PUT of one that
        // exists (same name, same bytes) refreshes its time
        self.store.put(&path, object_store::PutPayload::from(blob.bytes().to_vec())).await.map_err(remote)?;
        Ok(())
    }

    async fn get(&self, sha256: &str) -> BlobResult<Option<Vec<u8>>> {
        if !valid_hash(sha256) {
            return Ok(None);
        }
        match self.store.get(&self.path(sha256)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(remote)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }

    async fn written_before(&self, before_ms: i64) -> BlobResult<Vec<String>> {
        // one listing per two-character folder (multipart uploads a crash left are the bucket's
        // lifecycle rule's to end, they are not objects)
        let mut old = Vec::new();
        for i in 0..=255u8 {
            let rel = format!("sha256/{i:02x}");
            let prefix = object_store::path::Path::from(if self.prefix.is_empty() { rel } else { format!("{}/{rel}", self.prefix) });
            let listed = self.store.list_with_delimiter(Some(&prefix)).await.map_err(remote)?;
            for o in listed.objects {
                let Some(name) = o.location.filename() else { continue };
                let hash = format!("{i:02x}{name}");
                if valid_hash(&hash) && o.last_modified.timestamp_millis() < before_ms {
                    old.push(hash);
                }
            }
        }
        Ok(old)
    }

    async fn delete(&self, sha256: &str) -> BlobResult<()> {
        if !valid_hash(sha256) {
            return Ok(());
        }
        match self.store.delete(&self.path(sha256)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(remote(e)),
        }
    }
}

/// Blobs in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryBlobs(parking_lot::Mutex<std::collections::HashMap<String, Vec<u8>>>);

#[async_trait::async_trait]
impl BlobStore for MemoryBlobs {
    async fn put_blob(&self, blob: &Blob<'_>) -> BlobResult<()> {
        self.0.lock().insert(blob.sha256().to_string(), blob.bytes().to_vec());
        Ok(())
    }

    async fn get(&self, sha256: &str) -> BlobResult<Option<Vec<u8>>> {
        Ok(self.0.lock().get(sha256).cloned())
    }

    async fn written_before(&self, _before_ms: i64) -> BlobResult<Vec<String>> {
        // memory keeps no times, and ends with the process: nothing is ever old
        Ok(Vec::new())
    }

    async fn delete(&self, sha256: &str) -> BlobResult<()> {
        self.0.lock().remove(sha256);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn folder_blobs_are_content_addressed() {
        let dir = std::env::temp_dir().join(format!("fascicolo-blobs-{}", uuid::Uuid::new_v4()));
        let blobs = FolderBlobs::new(&dir);
        let h = blobs.put(b"hello").await.unwrap();
        assert_eq!(h, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!(blobs.put(b"hello").await.unwrap(), h);
        assert_eq!(blobs.get(&h).await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(blobs.get(&"0".repeat(64)).await.unwrap(), None);
        assert_eq!(blobs.get("../../etc/passwd").await.unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn object_store_blobs_are_content_addressed() {
        let mem = std::sync::Arc::new(object_store::memory::InMemory::new());
        let blobs = ObjectBlobs::new(mem.clone(), "/fse/");
        let h = blobs.put(b"hello").await.unwrap();
        assert_eq!(blobs.put(b"hello").await.unwrap(), h);
        assert_eq!(blobs.get(&h).await.unwrap().as_deref(), Some(&b"hello"[..]));
        assert_eq!(blobs.get(&"0".repeat(64)).await.unwrap(), None);
        // where it lives, as an S3 bucket would hold it
        let key = object_store::path::Path::from(format!("fse/sha256/{}/{}", &h[..2], &h[2..]));
        use object_store::ObjectStore;
        assert_eq!(mem.get(&key).await.unwrap().bytes().await.unwrap().as_ref(), b"hello");
        // listed by age, then removed
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let later = now + 1000;
        assert_eq!(blobs.written_before(later).await.unwrap(), vec![h.clone()]);
        assert!(blobs.written_before(later - 60_000).await.unwrap().is_empty());
        blobs.delete(&h).await.unwrap();
        blobs.delete(&h).await.unwrap();
        assert_eq!(blobs.get(&h).await.unwrap(), None);
        assert!(blobs.written_before(later).await.unwrap().is_empty());
    }

    #[test]
    fn an_s3_url_configures_a_bucket_without_contacting_it() {
        assert!(ObjectBlobs::s3("s3://fascicolo-docs/originals").is_ok());
        assert!(ObjectBlobs::s3("https://example.invalid/x").is_err());
    }
}
