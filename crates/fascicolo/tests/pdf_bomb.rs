//! A decompression bomb (a 1.5 GB object stream in a small PDF) is read in the PDF worker's
//! bounded process: the server's own memory stays flat. Alone in its test binary, so the
//! process's peak memory is the server's and nothing else's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pdf_gen;

use common::*;
use fascicolo_app::{Actor, Who};
use pdf_gen::{pages, pdf_file, peak_rss_mib};
use std::io::Write;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_decompression_bomb_does_not_grow_the_server() {
    let app = spawn_app().await;
    let producer = Actor::new(Who::Client { client_id: "lis-org-a".into(), organization: Some("org-a".into()), platform: false });
    let hospital = token_for(&app.store, &producer).await;
    // a compressed object stream that expands to about 1.5 GB
    let before = peak_rss_mib();
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![b' '; 1 << 20];
    for _ in 0..1536 {
        z.write_all(&chunk).unwrap();
    }
    let packed = z.finish().unwrap();
    let objstm = [
        format!("<< /Type /ObjStm /N 1 /First 4 /Filter /FlateDecode /Length {} >>\nstream\n", packed.len()).into_bytes(),
        packed,
        b"\nendstream".to_vec(),
    ]
    .concat();
    let catalog = b"<< /Type /Catalog /Pages 2 0 R >>".to_vec();
    let pdf = pdf_file(&[catalog, pages(), objstm]);
    let (status, body, _) = app.raw("POST", "/ingest/v1/documents/validation", Some(&hospital), Some((pdf, "application/pdf"))).await;
    assert_eq!(status, 422, "{body}");
    let grown = peak_rss_mib().saturating_sub(before);
    assert!(grown < 300, "the server's memory grew by {grown} MiB reading a PDF");
    let t = Instant::now();
    let r = app.client.get(format!("{}/healthz", app.root)).timeout(Duration::from_secs(5)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(t.elapsed() < Duration::from_secs(2), "the server must stay responsive");
}
