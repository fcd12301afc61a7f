//! The pool of threads that validate CDA2 documents (XSD and the national schematrons, compiled
//! once per thread), fair between producers: each producer's documents queue apart and are taken
//! in turn ([`fair::FairQueue`]), a producer's costly documents never hold every thread, and the
//! engine failing on one document refuses that document only.
#![forbid(unsafe_code)]

pub mod fair;

use std::sync::Arc;

use fascicolo_cda::mapping::{self, Header};
use fascicolo_cda::{validate, Problem, Report, Source, Validator};

/// What a validator thread answers: the report and, when the document is well-formed XML, what
/// was read from its one parse.
#[derive(Debug)]
pub struct Validated {
    pub report: Report,
    pub read: Option<ReadCda>,
}

/// A well-formed CDA2 as the validator thread parsed it: the text with its tree (for the
/// mapping), the header, and the custodian organisation's ids (`root`, `extension`).
#[derive(Debug)]
pub struct ReadCda {
    pub parsed: validate::ParsedCda,
    pub header: Header,
    pub custodian: Vec<(String, String)>,
}

type Job = (String, tokio::sync::oneshot::Sender<Validated>);

/// Documents from this size on are the costly ones: one producer's are held to all validator
/// threads but one (real CDA2 documents are tens of kilobytes; those carrying images or a PDF
/// are the exception).
pub const HEAVY_DOCUMENT: usize = 256 * 1024;

/// Threads that validate CDA2 documents, each with its own compiled schematrons. Documents
/// queue per producer and are taken in turn; with two threads or more, one producer's large
/// documents never hold them all, so a flood of costly documents keeps no other producer waiting.
#[derive(Debug, Clone)]
pub struct Validators {
    queue: Arc<Closing>,
}

/// The queue, closed (its threads end) when the last handle goes.
#[derive(Debug)]
struct Closing(Arc<fair::FairQueue<Job>>);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Validators {
    /// Starts `threads` validator threads (at least one).
    pub fn start(threads: usize) -> Self {
        Self::start_with(threads, None)
    }

    /// [`Validators::start`] with the time each document is given (the validator's default
    /// unless set).
    pub fn start_with(threads: usize, budget: Option<std::time::Duration>) -> Self {
        let threads = threads.max(1);
        let queue = Arc::new(fair::FairQueue::<Job>::new(threads.saturating_sub(1)));
        for i in 0..threads {
            let queue = Arc::clone(&queue);
            let fresh = move || budget.map_or_else(Validator::new, Validator::with_budget);
            let spawned = std::thread::Builder::new().name(format!("cda-validator-{i}")).spawn(move || {
                let mut validator = fresh();
                while let Some((taken, (text, reply))) = queue.take() {
                    // an engine panic on some input refuses that document; the thread goes on
                    // with a fresh validator
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let (report, parsed) = validator.validate_owned(text);
                        let read = parsed.map(|parsed| {
                            let doc = parsed.borrow_dependent();
                            let (header, custodian) = (mapping::header(doc), mapping::custodian_ids(doc));
                            ReadCda { parsed, header, custodian }
                        });
                        (report, read)
                    }));
                    let (report, read) = outcome.unwrap_or_else(|_| {
                        tracing::error!("the validation engine failed on a document");
                        validator = fresh();
                        let problem =
                            Problem::error(Source::Schematron, "engine", "the validation engine could not process this document", None);
                        (Report { problems: vec![problem], doc_type: None }, None)
                    });
                    drop(taken);
                    let _ = reply.send(Validated { report, read });
                }
            });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "could not start a validator thread");
            }
        }
        Self { queue: Arc::new(Closing(queue)) }
    }

    /// Validates a document [`validate::decode`] accepted, queued behind `producer`'s own.
    pub async fn validate(&self, producer: &str, text: String) -> Validated {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let heavy = text.len() >= HEAVY_DOCUMENT;
        if !self.queue.0.push(producer, (text, reply), heavy) {
            return engine_down();
        }
        rx.await.unwrap_or_else(|_| engine_down())
    }
}

fn engine_down() -> Validated {
    let problem = Problem::error(Source::Schematron, "engine", "the validation engine is not running", None);
    Validated { report: Report { problems: vec![problem], doc_type: None }, read: None }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn example(name: &str) -> String {
        std::fs::read_to_string(format!("{}/../cda/tests/data/{name}.xml", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// One producer sends a burst of large documents; another's single document, sent last, is
    /// not kept waiting behind the burst: it goes to the thread the burst may not take.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_producer_cannot_keep_the_validators_from_another() {
        let validators = Validators::start(2);
        // the discharge letter made large by a comment (as costly documents are)
        let ldo = example("LDO");
        let at = ldo.find("<ClinicalDocument").unwrap();
        let doc = format!("{}<!--{}-->{}", &ldo[..at], "x".repeat(HEAVY_DOCUMENT), &ldo[at..]);
        let order = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (v, doc, order) = (validators.clone(), doc.clone(), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let r = v.validate("client:flood", doc).await;
                assert!(r.read.is_some());
                order.lock().push(format!("flood-{i}"));
            }));
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let other = validators.validate("client:other", example("LAB")).await;
        assert!(other.report.problems.iter().all(|p| p.severity != fascicolo_cda::Severity::Error), "{:?}", other.report.problems);
        order.lock().push("other".into());
        for t in tasks {
            t.await.unwrap();
        }
        let order = order.lock().clone();
        let at = order.iter().position(|o| o == "other").unwrap();
        assert!(at <= 2, "the other producer's document waited behind the burst: {order:?}");
    }

    #[tokio::test]
    async fn a_clone_keeps_the_validators_running() {
        let validators = Validators::start(1);
        let handle = validators.clone();
        drop(validators);
        // a handle keeps the threads: still served
        assert!(handle.validate("p", example("LAB")).await.read.is_some());
    }
}
