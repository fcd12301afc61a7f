//! `fascicolo seed --citizens N --seed S`: loads the synthetic Lombardy (fascicolo-seed) into the
//! store. Registry resources go in one transaction per batch of households; every clinical
//! document is published through the producer path (validation, mapping, audit) by the client
//! of the ASST that wrote it. Streamed (one batch in memory), resumable (the last finished
//! batch is recorded), deterministic for a seed.

use anyhow::Context;
use fascicolo_app::ingest::{Ingest, Metadata, Submission};
use fascicolo_app::{Actor, FhirService, Who};
use fascicolo_seed::clinical::{documents, Depth, Doc};
use fascicolo_seed::people::{Config, Generator, Household};
use serde_json::{json, Value};

/// The job marks of seeding: `seed/region` (the region this store holds) and one per batch key.
const JOB: &str = "seed/";

#[derive(clap::Args, Debug, Clone)]
pub struct SeedArgs {
    /// Citizens to generate.
    #[arg(long, default_value_t = 1_000)]
    pub citizens: u64,
    /// The seed: the same seed gives the same region.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Years of clinical history.
    #[arg(long, default_value_t = 5)]
    pub years: i64,
    /// Registry only, no clinical documents.
    #[arg(long)]
    pub no_documents: bool,
    /// Households per registry transaction.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Documents published concurrently.
    #[arg(long, default_value_t = 4)]
    pub jobs: usize,
}

/// What a run did.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub households: u64,
    pub citizens: u64,
    pub resources: u64,
    pub documents: u64,
    /// Documents by kind (`lab`, `vaccination`, `specialist`, `radiology`, `discharge`, `emergency`, `prescription`).
    pub kinds: std::collections::BTreeMap<&'static str, u64>,
    pub skipped_households: u64,
}

/// Write resources with PUT in transactions of 500, as the console (not audited).
pub async fn put_all(fhir: &FhirService, resources: Vec<Value>) -> anyhow::Result<u64> {
    let n = resources.len() as u64;
    for chunk in resources.chunks(500) {
        let entries: Vec<Value> = chunk
            .iter()
            .map(|r| {
                let url = format!("{}/{}", r["resourceType"].as_str().unwrap_or_default(), r["id"].as_str().unwrap_or_default());
                json!({"resource": r, "request": {"method": "PUT", "url": url}})
            })
            .collect();
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
        fhir.process_bundle_value(&Actor::system(), bundle, "urn:fascicolo:seed").await.context("loading registry resources")?;
    }
    Ok(n)
}

/// Publish generated documents through the producer path, each as the client of its
/// producing organisation, `jobs` at a time; the number published.
pub async fn publish(ingest: &Ingest, docs: Vec<Doc>, jobs: usize) -> anyhow::Result<u64> {
    let mut n = 0;
    let mut set = tokio::task::JoinSet::new();
    let mut queue = docs.into_iter();
    loop {
        while set.len() < jobs.max(1) {
            let Some(doc) = queue.next() else { break };
            let ingest = ingest.clone();
            set.spawn(async move {
                let producer = Actor::new(Who::Client {
                    client_id: format!("seed-{}", doc.producer),
                    organization: Some(doc.producer.clone()),
                    platform: false,
                });
                // what the producer declares beside the document: an art. 6 category, the
                // hiding the citizen asked for at the point of care
                let metadata = Metadata {
                    categoria_art6: doc.art6.map(String::from),
                    atti_clinici_regole_accesso: doc.hiding.map(|h| fascicolo_app::ingest::OneOrMany::One(h.to_string())),
                    ..Metadata::default()
                };
                let sub = Submission { bytes: doc.xml.into_bytes(), content_type: "application/xml".into(), metadata };
                ingest.publish(&producer, sub).await.map_err(|e| {
                    // the problems say what the generator got wrong (rule id, message, location)
                    let problems: Vec<String> = e
                        .problems
                        .iter()
                        .take(5)
                        .map(|p| format!("{} {} at {}", p.id, p.message, p.location.as_deref().unwrap_or("-")))
                        .collect();
                    anyhow::anyhow!("publishing {} ({}) failed: {} {}; {}", doc.id, doc.kind, e.status, e.message, problems.join("; "))
                })
            });
        }
        match set.join_next().await {
            None => return Ok(n),
            Some(r) => {
                r.context("a publication task failed")??;
                n += 1;
            }
        }
    }
}

async fn progress(fhir: &FhirService, key: &str) -> anyhow::Result<u64> {
    Ok(fhir
        .job_mark(&format!("{JOB}{key}"))
        .await?
        .and_then(|r| serde_json::from_str::<Value>(&r).ok())
        .and_then(|v| v["households"].as_u64())
        .unwrap_or(0))
}

async fn record(fhir: &FhirService, key: &str, households: u64, citizens: u64) -> anyhow::Result<()> {
    let data = json!({"households": households, "citizens": citizens}).to_string();
    fhir.set_job_mark(&format!("{JOB}{key}"), &data).await?;
    Ok(())
}

/// The synthetic region a store holds. One per store: people, doctors and prescription numbers
/// are numbered from the region's start (`pz-0-0`, the first household's NREs), so a second
/// region with other parameters would overwrite the first one's people and take its
/// prescription numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Region {
    pub seed: u64,
    pub citizens: u64,
    pub years: i64,
}

impl From<&SeedArgs> for Region {
    fn from(a: &SeedArgs) -> Self {
        Region { seed: a.seed, citizens: a.citizens, years: a.years }
    }
}

const REGION_ID: &str = "region";

/// The region this store holds, if one was seeded.
pub async fn region(fhir: &FhirService) -> anyhow::Result<Option<Region>> {
    let Some(rec) = fhir.job_mark(&format!("{JOB}{REGION_ID}")).await? else { return Ok(None) };
    Ok(Some(serde_json::from_str(&rec).context("the recorded synthetic region")?))
}

/// Records `want` as the store's region, or checks that it is the one already there.
async fn claim_region(fhir: &FhirService, want: Region) -> anyhow::Result<()> {
    let data = serde_json::to_string(&want)?;
    if fhir.first_job_mark(&format!("{JOB}{REGION_ID}"), &data).await? {
        return Ok(());
    }
    match region(fhir).await? {
        Some(have) if have == want => Ok(()),
        Some(have) => anyhow::bail!(
            "this data folder already holds the synthetic region of seed {} with {} citizens and {} years of history; \
             a region with other parameters would reuse its identifiers (patients, doctors, prescription numbers). \
             Seed into an empty data folder (--data), or run `fascicolo seed --seed {} --citizens {} --years {}` to resume that one",
            have.seed,
            have.citizens,
            have.years,
            have.seed,
            have.citizens,
            have.years
        ),
        None => anyhow::bail!("the synthetic region's record disappeared while it was being claimed"),
    }
}

/// Generates and loads the region; `show` draws a progress bar. A store holds one region:
/// another seed, size or depth than the one already there is refused before anything is written.
pub async fn run(fhir: &FhirService, ingest: &Ingest, args: &SeedArgs, show: bool) -> anyhow::Result<Summary> {
    claim_region(fhir, Region::from(args)).await?;
    let today = fascicolo_seed::today();
    // a registry-only run does not count as done for a run with documents
    let key = format!("seed-{}-{}-{}{}", args.seed, args.citizens, args.years, if args.no_documents { "-registry" } else { "" });
    let done = progress(fhir, &key).await?;
    let mut summary = Summary { skipped_households: done, ..Summary::default() };
    let mut generator = Generator::new(Config::new(args.seed, args.citizens, today));
    let layout = generator.layout().clone();
    if done == 0 {
        summary.resources += put_all(fhir, fascicolo_seed::region::resources(args.seed, &layout)).await?;
    }
    let bar = if show { indicatif::ProgressBar::new(args.citizens) } else { indicatif::ProgressBar::hidden() };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} citizens, {msg} [{elapsed_precise}, eta {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let depth = Depth { years: args.years, protected: false };
    let mut batch: Vec<Household> = Vec::with_capacity(args.batch);
    let mut index = 0u64;
    loop {
        let next = generator.next();
        let finished = next.is_none();
        if let Some(h) = next {
            index += 1;
            if index <= done {
                // generated again (cheaply) so that codes and lists continue as before
                bar.set_position(generator.produced());
                continue;
            }
            batch.push(h);
            if batch.len() < args.batch.max(1) {
                continue;
            }
        }
        if batch.is_empty() {
            break;
        }
        let mut resources = Vec::new();
        let mut docs = Vec::new();
        for h in &batch {
            let ats = layout.assts[h.asst].ats;
            resources.extend(fascicolo_seed::registry::resources(h, ats, today));
            if !args.no_documents {
                for d in documents(args.seed, &layout, today, depth, h) {
                    *summary.kinds.entry(d.kind).or_default() += 1;
                    docs.push(d);
                }
            }
            summary.citizens += h.members.len() as u64;
        }
        summary.resources += put_all(fhir, resources).await?;
        summary.documents += publish(ingest, docs, args.jobs).await?;
        summary.households += batch.len() as u64;
        record(fhir, &key, index, generator.produced()).await?;
        bar.set_position(generator.produced());
        bar.set_message(format!("{} documents", summary.documents));
        batch.clear();
        if finished {
            break;
        }
    }
    bar.finish();
    Ok(summary)
}

/// Largest NDJSON file `write_ndjson` writes before it starts the next one of the same type:
/// well under what `fascicolo import` takes in one file (`import::MAX_NDJSON_BYTES`).
const NDJSON_FILE_BYTES: u64 = 8 << 20;

/// One resource type's NDJSON output: `Type.0000.ndjson`, `Type.0001.ndjson`, ..., each written
/// as `*.part` and renamed when complete, so a folder never shows half a file as a finished one.
struct TypeFiles {
    dir: std::path::PathBuf,
    resource_type: String,
    index: usize,
    written: u64,
    out: Option<(std::io::BufWriter<std::fs::File>, std::path::PathBuf)>,
}

impl TypeFiles {
    fn finish(&mut self) -> anyhow::Result<()> {
        use std::io::Write as _;
        if let Some((mut w, part)) = self.out.take() {
            w.flush()?;
            let done = part.with_extension("");
            std::fs::rename(&part, &done).with_context(|| format!("renaming {}", part.display()))?;
            self.index += 1;
            self.written = 0;
        }
        Ok(())
    }

    fn write(&mut self, line: &[u8]) -> anyhow::Result<()> {
        use std::io::Write as _;
        if self.written > 0 && self.written + line.len() as u64 > NDJSON_FILE_BYTES {
            self.finish()?;
        }
        if self.out.is_none() {
            let part = self.dir.join(format!("{}.{:04}.ndjson.part", self.resource_type, self.index));
            let f = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
            self.out = Some((std::io::BufWriter::new(f), part));
        }
        if let Some((w, _)) = self.out.as_mut() {
            w.write_all(line)?;
            w.write_all(b"\n")?;
        }
        self.written += line.len() as u64 + 1;
        Ok(())
    }
}

/// Writes the region's registry (the regional organisations, sites and doctors, and every
/// household's people with their coverage, doctor choice and relations: what `run` writes with
/// `--no-documents`) as NDJSON files in `dir`, one or more per resource type, for
/// `fascicolo import`. Clinical histories are CDA2 documents and go through publication
/// (`run`); asking for them here is an error. `dir` must hold no NDJSON files yet (two regions
/// in one folder would be imported together).
pub fn write_ndjson(args: &SeedArgs, dir: &std::path::Path) -> anyhow::Result<Summary> {
    anyhow::ensure!(
        args.no_documents,
        "--ndjson writes the registry only: add --no-documents (clinical histories are CDA2 documents, published by `fascicolo seed` without --ndjson)"
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name().to_string_lossy().into_owned();
        anyhow::ensure!(
            !name.ends_with(".ndjson") && !name.ends_with(".ndjson.part"),
            "{} already holds NDJSON files ({name}); write the region into an empty folder",
            dir.display()
        );
    }
    let today = fascicolo_seed::today();
    let generator = Generator::new(Config::new(args.seed, args.citizens, today));
    let layout = generator.layout().clone();
    let mut files: std::collections::BTreeMap<String, TypeFiles> = std::collections::BTreeMap::new();
    let mut summary = Summary::default();
    let mut emit = |resources: Vec<Value>, summary: &mut Summary| -> anyhow::Result<()> {
        for r in resources {
            let t = r["resourceType"].as_str().unwrap_or_default().to_string();
            let line = serde_json::to_vec(&r)?;
            let f = files.entry(t.clone()).or_insert_with(|| TypeFiles {
                dir: dir.to_path_buf(),
                resource_type: t,
                index: 0,
                written: 0,
                out: None,
            });
            f.write(&line)?;
            summary.resources += 1;
        }
        Ok(())
    };
    emit(fascicolo_seed::region::resources(args.seed, &layout), &mut summary)?;
    for h in generator {
        let ats = layout.assts[h.asst].ats;
        emit(fascicolo_seed::registry::resources(&h, ats, today), &mut summary)?;
        summary.citizens += h.members.len() as u64;
        summary.households += 1;
    }
    for f in files.values_mut() {
        f.finish()?;
    }
    Ok(summary)
}

/// A named person of the demo (a persona one signs in as) who gets a clinical history of
/// their own, generated and published exactly like the synthetic citizens'.
#[derive(Debug, Clone)]
pub struct PersonaHistory {
    pub patient: String,
    pub cf: String,
    pub given: &'static str,
    pub surname: &'static str,
    pub female: bool,
    pub birth: time::Date,
    pub chronic: Vec<fascicolo_seed::people::Chronic>,
    /// The family doctor who signs the prescriptions: (codice fiscale, given name, surname).
    pub doctor: Option<(String, &'static str, &'static str)>,
}

/// Publish a persona's history (Milan residents, served by the ASST of Milan); returns the
/// number of documents published. Runs once: documents are idempotent by id.
pub async fn persona_history(ingest: &Ingest, seed: u64, years: i64, p: &PersonaHistory, index: u64) -> anyhow::Result<u64> {
    let today = fascicolo_seed::today();
    let generator = Generator::new(Config::new(seed, 60, today));
    let layout = generator.layout().clone();
    let template = Generator::new(Config::new(seed, 60, today))
        .flat_map(|h| h.members)
        .find(|m| m.age(today) >= 18)
        .context("the generator made no adult")?;
    let data = fascicolo_seed::data::data();
    let town = data.town_by_istat("015146").context("Milan is in the municipalities list")?;
    let cf = fascicolo_domain::CodiceFiscale::parse(&p.cf).map_err(|e| anyhow::anyhow!("persona codice fiscale: {e}"))?;
    let birth_place = data.place(&p.cf[11..15], p.birth).unwrap_or(&town.place);
    let asst = layout.assts.iter().position(|a| std::ptr::eq(a, fascicolo_seed::region::asst_for(&layout, town))).unwrap_or(0);
    let person = fascicolo_seed::people::Person {
        id: p.patient.clone(),
        cf,
        given: p.given,
        surname: p.surname,
        female: p.female,
        birth: p.birth,
        birth_place,
        town,
        chronic: p.chronic.clone(),
        pregnant_since: None,
        consent: true,
        doctor: None,
        doctor_name: p.doctor.clone(),
        parents: Vec::new(),
        exemptions: p.chronic.iter().map(|c| c.exemption()).collect(),
        ..template
    };
    let h = Household { index, asst, members: vec![person], new_doctors: Vec::new() };
    // the personas also have the documents the portal protects (an art. 6 test, hidden reports)
    let docs = documents(seed, &layout, today, Depth { years, protected: true }, &h);
    publish(ingest, docs, 2).await
}
