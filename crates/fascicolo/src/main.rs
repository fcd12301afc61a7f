//! `fascicolo`: the one binary. It only wires adapters from configuration.
#![forbid(unsafe_code)]

/// mimalloc: the service allocates many short-lived JSON values; glibc's allocator spent a
/// third of ingest time in malloc/free (measured with perf).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use fascicolo_app::FhirService;
use fascicolo_load::{demo, import};
use fascicolo_server::config::Config;
use fascicolo_server::open_store;
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "fascicolo", version, about = "Fascicolo: a regional electronic health record platform (FHIR R4)")]
struct Cli {
    /// Configuration file (TOML). Default: ./fascicolo.toml when present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Listen address (also FASCICOLO_LISTEN).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Data folder for SQLite and blobs (also FASCICOLO_DATA_DIR).
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API (the default).
    Serve,
    /// Create or upgrade the database schema, then exit.
    Migrate,
    /// Import FHIR Bundles, single resources or NDJSON files (one resource per line) from files or folders.
    Import {
        /// Files or folders (searched recursively for *.json and *.ndjson).
        paths: Vec<PathBuf>,
        /// Files processed at once.
        #[arg(long, default_value_t = 4)]
        jobs: usize,
    },
    /// Load test the server over loopback and print a table of figures.
    Bench(fascicolo_bench::api::BenchArgs),
    /// Render the citizen portal's pages for a citizen with 1,000 documents and 5,000
    /// results, over loopback with a real session: latency percentiles and page sizes.
    BenchPortal(fascicolo_bench::portal::BenchPortalArgs),
    /// Document validation and publication throughput with the official CDA2 examples.
    BenchDocuments(fascicolo_bench::documents::BenchDocsArgs),
    /// Emergency rooms live: a busy day of every room sent over HTTP by the hospitals' clients,
    /// the public feed and pages under load, and the delay seen by thousands of live connections.
    BenchEr(fascicolo_bench::er::BenchErArgs),
    /// The celiac merchant API: authorisations/s over HTTP with merchant tokens, spread over many
    /// budgets and all on one, and a check that no budget was overspent.
    BenchCeliac(fascicolo_bench::celiac::BenchCeliacArgs),
    /// Changing the family doctor over HTTP with real sessions (the portal's form), and a check
    /// that every list is exact and none grew over its ceiling.
    BenchDoctors(fascicolo_bench::doctors::BenchDoctorsArgs),
    /// The booking network over HTTP with citizens' tokens: `$find` (first availability on the
    /// region's whole offer) and `$find` + `$book`, and a check that nothing was booked twice.
    BenchBooking(fascicolo_bench::booking::BenchBookingArgs),
    /// Bulk Data `$export` throughput over loopback with a platform client's token.
    BenchExport(fascicolo_bench::export::BenchExportArgs),
    /// Print an access token for the FHIR API, for trying it with curl:
    /// `--as citizen:<CF>`, `--as clinician:<Practitioner id>`, `--as operator:<Practitioner id>`,
    /// `--as system:<client id>` (a hospital-system token with system/*.*).
    Token {
        /// Who the token is for.
        #[arg(long = "as", value_name = "KIND:ID")]
        who: String,
        /// SMART scopes (space separated); default: everything the actor may do.
        #[arg(long)]
        scope: Option<String>,
        /// For a citizen: the record to act on (their own, a child's, a delegator's Patient id).
        #[arg(long)]
        patient: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// Generate a synthetic Lombardy and load it (registry, and clinical documents published
    /// through the producer path); deterministic for a seed, resumable.
    Seed {
        #[command(flatten)]
        args: fascicolo_load::seed::SeedArgs,
        /// Write the registry as NDJSON files in this folder instead of loading it (with
        /// --no-documents), for `fascicolo import`.
        #[arg(long, value_name = "DIR")]
        ndjson: Option<PathBuf>,
    },
    /// Validate CDA2 documents as the publication endpoint does (XSD, national schematron,
    /// terminology) and print the problems as JSON, one object per file; exits 1 if any has errors.
    Validate {
        /// CDA2 XML files.
        files: Vec<PathBuf>,
    },
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called (before the
/// server announces itself), so a signal sent as soon as the URL is printed is never lost.
/// A clean stop: the store tidies up (SQLite empties its write-ahead log into the database).
async fn close(store: &std::sync::Arc<dyn fascicolo_store::Store>) {
    if let Err(e) = store.close().await {
        tracing::warn!(error = %e, "the store did not close cleanly");
    }
}

fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    #[cfg(unix)]
    let int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt());
    async move {
        #[cfg(unix)]
        match (term, int) {
            (Ok(mut t), Ok(mut i)) => {
                tokio::select! { _ = t.recv() => {}, _ = i.recv() => {} }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutting down: finishing in-flight requests");
    }
}

fn main() -> anyhow::Result<()> {
    // a PDF worker (a child of the server) does one thing and starts nothing else
    if std::env::args_os().nth(1).is_some_and(|a| a == fascicolo_app::pdf_reader::WORKER_ARG) {
        return fascicolo_server::pdf_worker().map_err(Into::into);
    }
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("FASCICOLO_LOG").unwrap_or_else(|_| "info".into()))
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(l) = cli.listen {
        cfg.listen = l;
    }
    if let Some(d) = cli.data {
        cfg.data_dir = d;
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let store = open_store(&cfg).await?;
            if cfg.demo_mode() {
                fascicolo_server::seed_demo(&cfg, std::sync::Arc::clone(&store)).await?;
            }
            let app = fascicolo_server::Application::build(cfg.clone(), std::sync::Arc::clone(&store)).await?;
            let addr = app.addr();
            let shutdown = shutdown_signal();
            if cfg.demo_mode() {
                tracing::info!("demo mode: sign in at http://{addr}/auth/login; API tokens: fascicolo token --as citizen:RSSGLI85D52F205Q");
            }
            // the one line on stdout (scripts wait for it; stdout may be closed after it)
            println!("Fascicolo is serving on http://{addr}/  (FHIR API: http://{addr}/fhir/r4, store: {})", store.backend());
            app.run_until_stopped(shutdown).await?;
        }
        Command::Migrate => {
            let store = open_store(&cfg).await?;
            println!("schema ready ({}, migration {})", store.backend(), store.schema_version().await?);
            close(&store).await;
        }
        Command::Import { paths, jobs } => {
            let store = open_store(&cfg).await?;
            let summary = import::run(FhirService::new(std::sync::Arc::clone(&store)), &paths, jobs, true).await?;
            close(&store).await;
            println!("{summary}");
            if summary.errors > 0 {
                std::process::exit(1);
            }
        }
        Command::Bench(args) => fascicolo_bench::api::run(cfg, args).await?,
        Command::BenchDocuments(args) => fascicolo_bench::documents::run(cfg, args).await?,
        Command::BenchExport(args) => fascicolo_bench::export::run(cfg, args).await?,
        Command::BenchEr(args) => fascicolo_bench::er::run(cfg, args).await?,
        Command::BenchCeliac(args) => fascicolo_bench::celiac::run(cfg, args).await?,
        Command::BenchDoctors(args) => fascicolo_bench::doctors::run(cfg, args).await?,
        Command::BenchBooking(args) => fascicolo_bench::booking::run(cfg, args).await?,
        Command::BenchPortal(args) => fascicolo_bench::portal::run(cfg, args).await?,
        Command::Token { who, scope, patient, ttl } => {
            let store = open_store(&cfg).await?;
            let fhir = fascicolo_server::fhir_service(&cfg, std::sync::Arc::clone(&store));
            if cfg.demo_mode() {
                demo::seed(&fhir).await?;
            }
            let token = fascicolo_server::token::issue_for(&cfg, store, &who, scope.as_deref(), patient.as_deref(), ttl).await?;
            println!("{token}");
        }
        Command::Seed { args, ndjson: Some(dir) } => {
            let started = std::time::Instant::now();
            let s = tokio::task::spawn_blocking(move || fascicolo_load::seed::write_ndjson(&args, &dir).map(|s| (s, dir))).await??;
            let (s, dir) = s;
            println!(
                "wrote {} registry resources of {} citizens in {} households to {} in {:.1} s",
                s.resources,
                s.citizens,
                s.households,
                dir.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Command::Seed { args, ndjson: None } => {
            let store = open_store(&cfg).await?;
            let fhir = fascicolo_server::fhir_service(&cfg, std::sync::Arc::clone(&store));
            let ingest = fascicolo_server::ingest_service(&cfg, fhir.clone(), &cfg.public_url())?;
            let started = std::time::Instant::now();
            let s = fascicolo_load::seed::run(&fhir, &ingest, &args, true).await?;
            close(&store).await;
            println!(
                "seeded {} citizens in {} households ({} registry resources, {} documents published: {}) in {:.1} s{}",
                s.citizens,
                s.households,
                s.resources,
                s.documents,
                s.kinds.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", "),
                started.elapsed().as_secs_f64(),
                if s.skipped_households > 0 { format!("; resumed after {} households", s.skipped_households) } else { String::new() }
            );
        }
        Command::Validate { files } => {
            if !fascicolo_server::validate_files(&files)? {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
