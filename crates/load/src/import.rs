//! `fascicolo import`: FHIR Bundles (transaction, batch, collection), single resources and
//! NDJSON files (one resource per line, as FHIR Bulk Data writes them) from files and folders,
//! through the same app layer as the API.

use fascicolo_app::{error_status, Actor, FhirService};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub files: usize,
    pub resources: usize,
    pub errors: usize,
    pub seconds: f64,
    pub messages: Vec<String>,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for m in &self.messages {
            writeln!(f, "error: {m}")?;
        }
        write!(
            f,
            "imported {} resources from {} files in {:.1}s ({:.0} resources/s), {} errors",
            self.resources,
            self.files,
            self.seconds,
            self.resources as f64 / self.seconds.max(1e-9),
            self.errors
        )
    }
}

fn collect(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut stack = vec![p.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d)? {
                    let path = e?.path();
                    if path.is_dir() {
                        stack.push(path);
                    } else if path.extension().is_some_and(|x| x == "json" || x == "ndjson") {
                        out.push(path);
                    }
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    out.sort();
    Ok(out)
}

/// A Bundle as a transaction or batch: transaction and batch Bundles as they are, any other
/// Bundle's resources as a transaction (PUT when they have an id, POST otherwise).
fn as_bundle(v: Value) -> Value {
    if matches!(v["type"].as_str(), Some("transaction" | "batch")) {
        return v;
    }
    let entries: Vec<Value> = v["entry"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| e.get("resource").cloned())
        .map(|r| {
            let rt = r["resourceType"].as_str().unwrap_or_default().to_string();
            match r.get("id").and_then(Value::as_str).map(String::from) {
                Some(id) => json!({"resource": r, "request": {"method": "PUT", "url": format!("{rt}/{id}")}}),
                None => json!({"resource": r, "request": {"method": "POST", "url": rt}}),
            }
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// Namespace of the ids an import gives to resources its source did not name.
const IMPORT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5f1c_0a3e_7d4b_4c1a_9e62_0b8d_f1a4_c7e3);

/// Make every create in a Bundle keyed by its source entry, so importing the same files again
/// (after a crash, or by mistake) changes nothing instead of creating everything twice: a POST
/// without `ifNoneExist` becomes a PUT to an id derived from the entry's `urn:uuid` full URL
/// (unique by definition) or else from the file's content and the entry's position. References
/// to the full URL follow the PUT as they followed the POST.
fn keyed(mut bundle: Value, source: &[u8]) -> Value {
    let file = uuid::Uuid::new_v5(&IMPORT_NAMESPACE, source);
    if let Some(entries) = bundle["entry"].as_array_mut() {
        for (i, e) in entries.iter_mut().enumerate() {
            let post = e["request"]["method"].as_str().is_some_and(|m| m.eq_ignore_ascii_case("POST"));
            if !post || e["request"].get("ifNoneExist").is_some() {
                continue;
            }
            let rt = e["request"]["url"].as_str().unwrap_or_default().trim_matches('/').to_string();
            if rt.is_empty() || rt.contains(['/', '?']) || e["resource"]["resourceType"].as_str() != Some(rt.as_str()) {
                continue; // an operation or a malformed entry: left for the bundle's own checks
            }
            let id = match e["fullUrl"].as_str() {
                Some(u) if u.starts_with("urn:uuid:") => uuid::Uuid::new_v5(&IMPORT_NAMESPACE, u.as_bytes()),
                _ => uuid::Uuid::new_v5(&file, format!("entry/{i}").as_bytes()),
            };
            e["resource"]["id"] = json!(id.to_string());
            e["request"] = json!({"method": "PUT", "url": format!("{rt}/{id}")});
        }
    }
    bundle
}

/// A failure of the server itself says only that to an API client; the operator running the
/// import is told what failed.
fn operator_detail(e: &fascicolo_app::AppError, issues: &mut [fascicolo_fhir::OutcomeIssue]) {
    let detail = match e {
        fascicolo_app::AppError::Store(inner) => inner.to_string(),
        fascicolo_app::AppError::Internal(m) => m.clone(),
        _ => return,
    };
    if let Some(first) = issues.first_mut() {
        first.diagnostics = format!("{}: {detail}", first.diagnostics);
    }
}

/// One line for a failed file: the status and the first problems with their locations.
fn describe(path: &Path, e: &fascicolo_app::AppError) -> String {
    let (code, mut issues) = error_status(e);
    operator_detail(e, &mut issues);
    let msgs: Vec<String> =
        issues.iter().take(5).map(|i| format!("{} {}", i.expression.clone().unwrap_or_default(), i.diagnostics)).collect();
    format!("{}: HTTP {code}: {}", path.display(), msgs.join("; "))
}

/// Why a file was not imported: its messages, and whether it only waits for patients that
/// another file of the same import may create (NDJSON files come one per resource type, and
/// `Observation.ndjson` sorts before `Patient.ndjson`).
#[derive(Debug)]
struct Failure {
    messages: Vec<String>,
    waiting: bool,
}

impl From<String> for Failure {
    fn from(m: String) -> Self {
        Failure { messages: vec![m], waiting: false }
    }
}

async fn import_file(fhir: &FhirService, path: &Path) -> Result<usize, Failure> {
    if path.extension().is_some_and(|x| x == "ndjson") {
        return import_ndjson(fhir, path).await;
    }
    Ok(import_json(fhir, path).await?)
}

/// The largest NDJSON file imported (see [`fascicolo_app::ndjson::MAX_BYTES`]).
pub const MAX_NDJSON_BYTES: u64 = fascicolo_app::ndjson::MAX_BYTES as u64;

/// Rejected lines reported for one file; a file that is not NDJSON at all would otherwise
/// print every line of it.
const MAX_REPORTED_LINES: usize = 1000;

/// An NDJSON file: each non-blank line one resource, stored with its id (or, without one, an id
/// derived from the file's content and the line, so importing it again changes nothing). The
/// file is one transaction: a line that is not a resource, or that the validator or the gate
/// refuses, rejects the file, and every such line is reported with its number.
async fn import_ndjson(fhir: &FhirService, path: &Path) -> Result<usize, Failure> {
    let shown = path.display();
    let size = tokio::fs::metadata(path).await.map_err(|e| format!("{shown}: {e}"))?.len();
    if size > MAX_NDJSON_BYTES {
        return Err(format!(
            "{shown}: {size} bytes, over the {} MiB limit for one NDJSON file (a file is imported all or nothing): split it",
            MAX_NDJSON_BYTES >> 20
        )
        .into());
    }
    let bytes = tokio::fs::read(path).await.map_err(|e| format!("{shown}: {e}"))?;
    let system = Actor::system();
    let e = match retrying_conflicts(|| fhir.import_ndjson(&system, &bytes)).await {
        Ok(n) => return Ok(n),
        Err(e) => e,
    };
    let (code, mut issues) = error_status(&e);
    operator_detail(&e, &mut issues);
    // a reference to a patient not stored yet is the only problem another file can mend
    let waiting = matches!(e, fascicolo_app::AppError::Invalid(_))
        && issues.iter().all(|i| i.code == "not-found" && i.diagnostics.contains("does not exist"));
    let located: Vec<String> = issues
        .iter()
        .map(|i| match i.expression.as_deref().and_then(|x| x.strip_prefix("line ")) {
            Some(at) => match at.split_once(": ") {
                Some((n, path)) => format!("{shown}:{n}: {path} {}", i.diagnostics),
                None => format!("{shown}:{at}: {}", i.diagnostics),
            },
            None => format!("{shown}: HTTP {code}: {} {}", i.expression.clone().unwrap_or_default(), i.diagnostics),
        })
        .collect();
    Err(Failure { messages: capped(located), waiting })
}

fn capped(mut messages: Vec<String>) -> Vec<String> {
    if messages.len() > MAX_REPORTED_LINES {
        let more = messages.len() - MAX_REPORTED_LINES;
        messages.truncate(MAX_REPORTED_LINES);
        messages.push(format!("... and {more} more"));
    }
    messages
}

/// A write as the import runs it: files that share resources (a practitioner in many
/// patients' bundles) may write the same id at once, and the loser of such a race waits, tries
/// again, and finds it already there.
async fn retrying_conflicts<T, F, Fut>(mut write: F) -> Result<T, fascicolo_app::AppError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, fascicolo_app::AppError>>,
{
    let mut attempt = 0;
    loop {
        match write().await {
            Err(fascicolo_app::AppError::Conflict(_)) if attempt < 8 => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt.min(6))).await;
            }
            other => return other,
        }
    }
}

async fn import_json(fhir: &FhirService, path: &Path) -> Result<usize, String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    if v.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        // a single resource: create (or update with its id) so problems are located in it
        let rt = v.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string();
        // without an id, one derived from the file's content: importing it again changes nothing
        let res = match v.get("id").and_then(Value::as_str) {
            Some(id) => fhir.update(&Actor::system(), &rt, id, &bytes, None).await,
            None => {
                let id = uuid::Uuid::new_v5(&IMPORT_NAMESPACE, &bytes).to_string();
                let mut with_id = v.clone();
                with_id["id"] = json!(id);
                let body = serde_json::to_vec(&with_id).map_err(|e| format!("{}: {e}", path.display()))?;
                fhir.update(&Actor::system(), &rt, &id, &body, None).await
            }
        };
        return res.map(|_| 1).map_err(|e| describe(path, &e));
    }
    let bundle = keyed(as_bundle(v), &bytes);
    let n = bundle["entry"].as_array().map_or(0, Vec::len);
    let system = Actor::system();
    match retrying_conflicts(|| fhir.process_bundle_value(&system, bundle.clone(), "urn:fascicolo:import")).await {
        Ok(resp) => {
            let failed: Vec<String> = resp["entry"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|e| !e["response"]["status"].as_str().unwrap_or("").starts_with('2'))
                        .map(|e| e["response"]["outcome"]["issue"][0]["diagnostics"].as_str().unwrap_or("failed").to_string())
                        .collect()
                })
                .unwrap_or_default();
            if failed.is_empty() {
                Ok(n)
            } else {
                Err(format!("{}: {} entries failed: {}", path.display(), failed.len(), failed.join("; ")))
            }
        }
        Err(e) => Err(describe(path, &e)),
    }
}

/// Import every file found under `paths`, `jobs` at a time. Files that failed only because they
/// name patients another file creates are tried again once the others are in, as long as a
/// round stores something.
pub async fn run(fhir: FhirService, paths: &[PathBuf], jobs: usize, progress: bool) -> anyhow::Result<Summary> {
    let files = collect(paths)?;
    let bar = if progress { ProgressBar::new(files.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(ProgressStyle::with_template("{bar:40} {pos}/{len} files  {msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut s = Summary { files: files.len(), ..Default::default() };
    let mut pending = files;
    loop {
        let mut set = tokio::task::JoinSet::new();
        for f in pending.drain(..) {
            let fhir = fhir.clone();
            let sem = Arc::clone(&sem);
            set.spawn(async move {
                let r = match sem.acquire_owned().await {
                    Ok(_permit) => import_file(&fhir, &f).await,
                    Err(e) => Err(Failure::from(e.to_string())),
                };
                (f, r)
            });
        }
        let mut waiting = Vec::new();
        let mut stored = false;
        while let Some(r) = set.join_next().await {
            match r? {
                (_, Ok(n)) => {
                    s.resources += n;
                    stored = true;
                    bar.inc(1);
                }
                (f, Err(failure)) if failure.waiting => waiting.push((f, failure)),
                (_, Err(failure)) => {
                    s.errors += 1;
                    s.messages.extend(failure.messages);
                    bar.inc(1);
                }
            }
            let secs = start.elapsed().as_secs_f64();
            bar.set_message(format!("{} resources, {:.0}/s, {} errors", s.resources, s.resources as f64 / secs.max(1e-9), s.errors));
        }
        if stored && !waiting.is_empty() {
            waiting.sort_by(|a, b| a.0.cmp(&b.0));
            pending = waiting.into_iter().map(|(f, _)| f).collect();
            continue;
        }
        for (_, failure) in waiting {
            s.errors += 1;
            s.messages.extend(failure.messages);
            bar.inc(1);
        }
        break;
    }
    bar.finish_and_clear();
    s.seconds = start.elapsed().as_secs_f64();
    // a bulk load leaves the planner's statistics stale
    fhir.analyze().await?;
    Ok(s)
}
