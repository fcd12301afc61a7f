//! Train the zstd dictionary resource content is compressed with (decision 0010):
//! `cargo run --release -p fascicolo-store-sqlite --example train_dictionary OUT DB...`.
//!
//! Reads the current content of every resource in the given SQLite stores (plain or already
//! compressed), takes an even sample of each resource type, and writes a dictionary of 112 KiB.
//! A dictionary that shipped is never replaced in place: a new one gets a new file and id, and
//! the program keeps reading frames written with the old one.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;

/// About a hundred times the dictionary's size in samples, as zstd's documentation advises.
const SAMPLE_BYTES: usize = 12 * 1024 * 1024;
const DICTIONARY_BYTES: usize = 112 * 1024;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, dbs) = args.split_first().expect("usage: train_dictionary OUT DB...");
    let mut by_type: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for db in dbs {
        let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
        let mut st = c.prepare("SELECT res_type, content FROM resources WHERE deleted = 0").expect("prepare");
        let mut rows = st.query([]).expect("query");
        while let Some(r) = rows.next().expect("row") {
            let t: String = r.get(0).expect("type");
            let json = match r.get_ref(1).expect("content") {
                rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                    fascicolo_store::content::decode(b).expect("decode")
                }
                _ => continue,
            };
            by_type.entry(t).or_default().push(json);
        }
    }
    let total: usize = by_type.values().flatten().map(String::len).sum();
    // the same share of every type, so the rarer types (documents, care plans) are in it too
    let keep = (SAMPLE_BYTES as f64 / total.max(1) as f64).min(1.0);
    let mut samples: Vec<&[u8]> = Vec::new();
    for (t, docs) in &by_type {
        let n = ((docs.len() as f64 * keep).ceil() as usize).clamp(1, docs.len());
        let step = docs.len() / n;
        samples.extend(docs.iter().step_by(step.max(1)).take(n).map(|d| d.as_bytes()));
        eprintln!("{t}: {n} of {}", docs.len());
    }
    let dict = zstd::dict::from_samples(&samples, DICTIONARY_BYTES).expect("train");
    std::fs::write(out, &dict).expect("write");
    eprintln!("{} samples, {} bytes -> {out} ({} bytes)", samples.len(), samples.iter().map(|s| s.len()).sum::<usize>(), dict.len());
}
