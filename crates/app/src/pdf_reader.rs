//! Untrusted PDFs are read in a process of their own. A PDF parser meets hostile input at the
//! publication endpoint: structures nested deep enough to overflow a thread's stack (which no
//! `catch_unwind` can catch: the process aborts), compressed streams that expand to gigabytes,
//! trees that make a walk explode. The child runs the same extraction (`fascicolo pdf-worker`,
//! [`fascicolo_cda::pdf::worker_reply`]) under limits on memory and CPU time set by itself, and
//! is killed past a wall-clock limit; whatever happens to it, the server answers the producer
//! with a clear error and keeps serving. At most a few children run at once.

use fascicolo_cda::pdf::{self, PdfError};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// The argument that makes the `fascicolo` binary a PDF worker.
pub const WORKER_ARG: &str = "pdf-worker";
/// Wall-clock time one PDF may take (the child also limits its own CPU time).
pub const WALL_TIME: Duration = Duration::from_secs(15);

/// How PDFs are read: in a child process (the server), or on a blocking thread of this process
/// (command-line tools reading files their user chose).
#[derive(Clone, Debug)]
pub struct PdfReader {
    program: Option<PathBuf>,
    permits: Arc<Semaphore>,
}

impl PdfReader {
    /// Read PDFs by running `program pdf-worker` (normally this very binary).
    pub fn isolated(program: PathBuf, concurrency: usize) -> Self {
        PdfReader { program: Some(program), permits: Arc::new(Semaphore::new(concurrency.max(1))) }
    }

    /// Read PDFs in this process (tools and tests of trusted files only).
    pub fn in_process() -> Self {
        PdfReader { program: None, permits: Arc::new(Semaphore::new(2)) }
    }

    /// The CDA2 embedded in a PDF.
    pub async fn extract_cda(&self, bytes: &[u8]) -> Result<Vec<u8>, PdfError> {
        let _permit = self.permits.acquire().await.map_err(|_| PdfError::Unreadable("the server is stopping".into()))?;
        match &self.program {
            None => {
                let bytes = bytes.to_vec();
                tokio::task::spawn_blocking(move || pdf::extract_cda(&bytes))
                    .await
                    .unwrap_or_else(|_| Err(PdfError::Unreadable(pdf::LIMITS_EXCEEDED.into())))
            }
            Some(program) => match tokio::time::timeout(WALL_TIME, run_child(program, bytes)).await {
                Ok(Ok(reply)) => pdf::parse_worker_reply(&reply),
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "the PDF worker could not be run");
                    Err(PdfError::Unreadable("the PDF reader is not available; try again later".into()))
                }
                // the child is killed when its handle is dropped (kill_on_drop)
                Err(_) => Err(PdfError::Unreadable(pdf::LIMITS_EXCEEDED.into())),
            },
        }
    }
}

async fn run_child(program: &PathBuf, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new(program)
        .arg(WORKER_ARG)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .env_clear()
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| std::io::Error::other("no stdin"))?;
    let mut stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
    let input = bytes.to_vec();
    let writer = tokio::spawn(async move {
        // a child that dies early closes the pipe: that is its answer, not an error here
        let _ = stdin.write_all(&input).await;
        drop(stdin);
    });
    let mut out = Vec::new();
    // the reply is at most the CDA2 limit and a little framing
    (&mut stdout).take((fascicolo_cda::validate::MAX_XML_BYTES + 64 * 1024) as u64).read_to_end(&mut out).await?;
    let status = child.wait().await?;
    let _ = writer.await;
    if !status.success() {
        return Ok(Vec::new()); // crashed or killed by its limits: parse_worker_reply says so
    }
    Ok(out)
}

/// The worker's side: read a PDF from standard input under limits, answer on standard output.
/// `limit` is called first to set the process's own resource limits.
pub fn worker_main(limit: impl FnOnce()) -> std::io::Result<()> {
    use std::io::{Read, Write};
    limit();
    let mut input = Vec::new();
    std::io::stdin().take(64 * 1024 * 1024).read_to_end(&mut input)?;
    let reply = pdf::worker_reply(&input);
    let mut out = std::io::stdout().lock();
    out.write_all(&reply)?;
    out.flush()
}
