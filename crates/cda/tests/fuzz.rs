//! A bounded mutation fuzz run over the two entry points that read untrusted bytes: the CDA2
//! validator (XML) and the PDF reader (the code the `pdf-worker` child runs). Inputs are the
//! official examples and a PDF carrying one, mutated at random: bytes flipped or set to XML and
//! PDF syntax, ranges deleted, repeated, moved, the end cut off.
//!
//! What must hold for every input: no panic escapes, each input is answered (a 30 s hang guard), and
//! what the PDF reader extracts is a `ClinicalDocument`. The run is deterministic for its seed;
//! `FUZZ_SEED` and `FUZZ_SECONDS` (default 8 per entry point) widen it locally:
//! `FUZZ_SECONDS=600 cargo test -p fascicolo-cda --release --test fuzz -- --nocapture`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use fascicolo_cda::validate::Validator;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{Duration, Instant};

const EXAMPLES: [&str; 9] = ["LAB", "LDO", "RAD", "RSA", "VPS", "PSS", "RAP", "CERT_VACC", "SING_VACC"];
const TOKENS: [&[u8]; 14] =
    [b"<", b">", b"&", b"\"", b"/>", b"<![CDATA[", b"]]>", b"<!DOCTYPE x [", b"&#0;", b"obj", b"endobj", b"[", b"<<", b"stream"];

fn example(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/data/{name}.xml", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x05EE_DF5E)
}

fn budget() -> Duration {
    Duration::from_secs(std::env::var("FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8))
}

/// One to four random edits.
fn mutate(rng: &mut StdRng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.gen_range(1..=4) {
        if v.is_empty() {
            v.extend_from_slice(TOKENS[rng.gen_range(0..TOKENS.len())]);
            continue;
        }
        let at = rng.gen_range(0..v.len());
        let len = rng.gen_range(1..=v.len().min(256));
        let end = (at + len).min(v.len());
        match rng.gen_range(0..7) {
            0 => v[at] ^= 1 << rng.gen_range(0..8),
            1 => v[at] = rng.gen(),
            2 => {
                let t = TOKENS[rng.gen_range(0..TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            3 => {
                v.drain(at..end);
            }
            4 => {
                // repeat a range many times (deep nesting, long names, huge attribute lists)
                let chunk = v[at..end].to_vec();
                let times = rng.gen_range(2..64);
                for _ in 0..times {
                    v.splice(at..at, chunk.iter().copied());
                }
            }
            5 => {
                // move a range elsewhere
                let chunk: Vec<u8> = v.drain(at..end).collect();
                let to = rng.gen_range(0..=v.len());
                v.splice(to..to, chunk);
            }
            _ => v.truncate(at),
        }
    }
    v
}

/// Runs `f` on mutated inputs until the time budget is spent; fails on the first input that
/// panics or takes too long, naming the seed and the iteration to replay it.
fn run(name: &str, inputs: &[Vec<u8>], mut f: impl FnMut(&[u8]) -> Result<(), String>) -> usize {
    let mut rng = StdRng::seed_from_u64(seed());
    let (start, budget) = (Instant::now(), budget());
    let mut n = 0;
    while start.elapsed() < budget {
        let base = &inputs[rng.gen_range(0..inputs.len())];
        let input = mutate(&mut rng, base);
        let t = Instant::now();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&input)));
        let took = t.elapsed();
        match outcome {
            Err(_) => panic!("{name}: input {n} (FUZZ_SEED={}) panicked", seed()),
            Ok(Err(m)) => panic!("{name}: input {n} (FUZZ_SEED={}): {m}", seed()),
            Ok(Ok(())) => {}
        }
        // A hang guard, not a speed target: the slowest input in debug builds takes well under a second.
        assert!(took < Duration::from_secs(30), "{name}: input {n} (FUZZ_SEED={}) took {took:?}", seed());
        n += 1;
    }
    eprintln!("{name}: {n} mutated inputs in {:?}", start.elapsed());
    n
}

#[test]
fn the_cda2_validator_answers_every_mutated_document() {
    let inputs: Vec<Vec<u8>> = EXAMPLES.iter().map(|e| example(e)).collect();
    let mut validator = Validator::new();
    let n = run("validator", &inputs, |bytes| {
        let report = validator.validate(bytes);
        // an answer is a report; a refused document says why
        if report.has_errors() && report.problems.iter().all(|p| p.message.trim().is_empty()) {
            return Err("a refusal without a reason".into());
        }
        Ok(())
    });
    assert!(n > 10, "the run must actually try inputs ({n})");
    // and the unmutated examples still pass: the fuzzing did not leave the validator broken
    assert!(!validator.validate(&example("LAB")).has_errors());
}

#[test]
fn the_pdf_reader_answers_every_mutated_pdf() {
    let inputs: Vec<Vec<u8>> = ["LAB", "RAD"]
        .iter()
        .map(|e| fascicolo_cda::pdf::text_pdf("Referto", &["testo del referto".into()], Some(("cda.xml", &example(e)))).unwrap())
        .collect();
    let n = run("pdf", &inputs, |bytes| {
        match fascicolo_cda::pdf::extract_cda(bytes) {
            Ok(cda) if !String::from_utf8_lossy(&cda).contains("ClinicalDocument") => Err("extracted something that is not a CDA2".into()),
            _ => Ok(()),
        }
        .and_then(|()| {
            // the worker's framed reply carries whatever the reader said, intact
            let reply = fascicolo_cda::pdf::worker_reply(bytes);
            match (fascicolo_cda::pdf::parse_worker_reply(&reply), fascicolo_cda::pdf::extract_cda(bytes)) {
                (Ok(a), Ok(b)) if a == b => Ok(()),
                (Err(_), Err(_)) => Ok(()),
                _ => Err("the worker's reply and the reader disagree".into()),
            }
        })
    });
    assert!(n > 10, "the run must actually try inputs ({n})");
}
