//! Benchmarks of the platform as clients see it: HTTP with real tokens per kind of actor
//! (`fascicolo bench`), document publication (`fascicolo bench-documents`) and the portal's
//! pages (`fascicolo bench-portal`), Bulk Data `$export` (`fascicolo bench-export`), with in-process figures beside them where labelled.
#![forbid(unsafe_code)]

pub mod api;
pub mod booking;
pub mod celiac;
pub mod doctors;
pub mod documents;
pub mod er;
pub mod export;
pub mod portal;

/// A fresh store for a benchmark run named `name`: a new schema on PostgreSQL when configured,
/// else a new SQLite folder under the data folder (`cfg.data_dir` is moved there).
pub async fn fresh_store(
    cfg: &mut fascicolo_server::config::Config,
    name: &str,
) -> anyhow::Result<std::sync::Arc<dyn fascicolo_store::Store>> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    Ok(match cfg.database_url.clone() {
        Some(url) if url.starts_with("postgres") => {
            let schema = format!("{}_{stamp}", name.replace('-', "_"));
            std::sync::Arc::new(fascicolo_store_postgres::PgStore::connect_in_schema(&url, cfg.pg_pool_size, Some(&schema)).await?)
        }
        _ => {
            cfg.data_dir = cfg.data_dir.join(format!("{name}-{stamp}"));
            fascicolo_server::open_store(cfg).await?
        }
    })
}

/// The text with every UUID (8-4-4-4-12 hex digits) replaced by one derived from it and `copy`:
/// a copy of a Synthea bundle whose resources and references are all new, and consistent
/// across the copy's files.
pub fn renumbered(text: &str, copy: u32) -> String {
    const SHAPE: [usize; 5] = [8, 4, 4, 4, 12];
    let is_uuid = |s: &[u8]| {
        let mut i = 0;
        for (g, n) in SHAPE.iter().enumerate() {
            if g > 0 {
                if s[i] != b'-' {
                    return false;
                }
                i += 1;
            }
            if !s[i..i + n].iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            i += n;
        }
        true
    };
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut i = 0;
    while i + 36 <= b.len() {
        if is_uuid(&b[i..i + 36]) && text.is_char_boundary(i) && text.is_char_boundary(i + 36) {
            out.push_str(&text[last..i]);
            let name = format!("{copy}:{}", &text[i..i + 36]);
            out.push_str(&uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string());
            i += 36;
            last = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[last..]);
    out
}

/// Import copy `copy` of the bundles in `dir` (copy 0 as they are), through a folder of
/// renumbered files; returns the import's summary.
pub async fn import_copy(
    fhir: &fascicolo_app::FhirService,
    dir: &std::path::Path,
    copy: u32,
) -> anyhow::Result<fascicolo_load::import::Summary> {
    if copy == 0 {
        return fascicolo_load::import::run(fhir.clone(), &[dir.to_path_buf()], 4, false).await;
    }
    let tmp = std::env::temp_dir().join(format!("fascicolo-bench-copy-{}-{copy}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            if let Some(name) = path.file_name() {
                std::fs::write(tmp.join(name), renumbered(&text, copy))?;
            }
        }
    }
    let s = fascicolo_load::import::run(fhir.clone(), std::slice::from_ref(&tmp), 4, false).await;
    let _ = std::fs::remove_dir_all(&tmp);
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn renumbering_changes_every_uuid_consistently_and_nothing_else() {
        let t = r#"{"id":"018f428e-34f6-4707-8009-5ad742f901e7","ref":"urn:uuid:018f428e-34f6-4707-8009-5ad742f901e7","n":"abc-1"}"#;
        let a = super::renumbered(t, 1);
        assert!(!a.contains("018f428e"));
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        assert_eq!(format!("urn:uuid:{}", v["id"].as_str().unwrap()), v["ref"]);
        assert_eq!(v["n"], "abc-1");
        assert_ne!(super::renumbered(t, 2), a);
        assert_eq!(super::renumbered(t, 1), a);
    }
}
