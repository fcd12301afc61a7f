//! Content-addressed storage of original documents (CDA2 XML, PDF, FHIR document Bundles): a
//! blob's name is the SHA-256 of its bytes, so storing is idempotent and a blob written before a
//! failed transaction is harmless (it is simply never referenced).

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::{AppError, AppResult};

/// Where originals live.
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync + std::fmt::Debug {
    /// Stores a blob under its SHA-256.
    async fn put_blob(&self, blob: &Blob<'_>) -> AppResult<()>;
    async fn get(&self, sha256: &str) -> AppResult<Option<Vec<u8>>>;

    /// Stores `bytes` under their SHA-256 (hex) and returns it.
    async fn put(&self, bytes: &[u8]) -> AppResult<String> {
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
    use std::fmt::Write;
    Sha256::digest(bytes).iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
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

fn io(e: std::io::Error) -> AppError {
    use fascicolo_store::StoreError;
    let msg = format!("blob store: {e}");
    AppError::Store(match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => StoreError::Full(msg),
        _ => StoreError::Backend(msg),
    })
}

#[async_trait::async_trait]
impl BlobStore for FolderBlobs {
    async fn put_blob(&self, blob: &Blob<'_>) -> AppResult<()> {
        let path = self.path(blob.sha256());
        let dir = path.parent().map(PathBuf::from).unwrap_or_else(|| self.root.clone());
        // write aside, then rename: a reader never sees half a blob
        let tmp = dir.join(format!(".{}.{}", &blob.sha256()[2..], uuid::Uuid::new_v4()));
        let bytes = blob.bytes().to_vec();
        // one trip to the blocking pool for the whole sequence
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            if path.try_exists()? {
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

    async fn get(&self, sha256: &str) -> AppResult<Option<Vec<u8>>> {
        if !valid_hash(sha256) {
            return Ok(None);
        }
        match tokio::fs::read(self.path(sha256)).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
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
    pub fn s3(url: &str) -> AppResult<Self> {
        let parsed = url
            .strip_prefix("s3://")
            .ok_or_else(|| AppError::BadRequest(format!("the blob store URL must start with s3:// (got {url})")))?;
        let (bucket, prefix) = parsed.split_once('/').unwrap_or((parsed, ""));
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .build()
            .map_err(|e| AppError::BadRequest(format!("the S3 blob store is not configured: {e}")))?;
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

fn remote(e: object_store::Error) -> AppError {
    AppError::Store(fascicolo_store::StoreError::Backend(format!("blob store: {e}")))
}

#[async_trait::async_trait]
impl BlobStore for ObjectBlobs {
    async fn put_blob(&self, blob: &Blob<'_>) -> AppResult<()> {
        let path = self.path(blob.sha256());
        match self.store.head(&path).await {
            Ok(_) => return Ok(()),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(remote(e)),
        }
        // a PUT of an object is atomic: readers see all of it or nothing
        self.store.put(&path, object_store::PutPayload::from(blob.bytes().to_vec())).await.map_err(remote)?;
        Ok(())
    }

    async fn get(&self, sha256: &str) -> AppResult<Option<Vec<u8>>> {
        if !valid_hash(sha256) {
            return Ok(None);
        }
        match self.store.get(&self.path(sha256)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(remote)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(remote(e)),
        }
    }
}

/// Blobs in memory (tests).
#[derive(Debug, Default)]
pub struct MemoryBlobs(parking_lot::Mutex<std::collections::HashMap<String, Vec<u8>>>);

#[async_trait::async_trait]
impl BlobStore for MemoryBlobs {
    async fn put_blob(&self, blob: &Blob<'_>) -> AppResult<()> {
        self.0.lock().insert(blob.sha256().to_string(), blob.bytes().to_vec());
        Ok(())
    }

    async fn get(&self, sha256: &str) -> AppResult<Option<Vec<u8>>> {
        Ok(self.0.lock().get(sha256).cloned())
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
    }

    #[test]
    fn an_s3_url_configures_a_bucket_without_contacting_it() {
        assert!(ObjectBlobs::s3("s3://fascicolo-docs/originals").is_ok());
        assert!(ObjectBlobs::s3("https://example.invalid/x").is_err());
    }
}
