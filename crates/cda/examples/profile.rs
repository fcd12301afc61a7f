//! Times the stages of validating one document: `cargo run --release -p fascicolo-cda --example profile -- FILE [N]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&args[1]).unwrap();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(20);
    let text = fascicolo_cda::validate::parse(&bytes).unwrap();
    let mut v = fascicolo_cda::Validator::new();
    v.validate_text(&text);
    let t = Instant::now();
    for _ in 0..n {
        let _ = fascicolo_cda::validate::tree(&text).unwrap();
    }
    println!("parse: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    let doc = fascicolo_cda::validate::tree(&text).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        let _ = fascicolo_cda::xsd::validate(&doc);
    }
    println!("xsd: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
    let t = Instant::now();
    for _ in 0..n {
        let _ = v.validate_text(&text);
    }
    println!("all: {:.2} ms", t.elapsed().as_secs_f64() * 1000.0 / n as f64);
}
