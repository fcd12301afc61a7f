//! The platform started one way: bind, settle the public URL, build the router; then serve
//! until told to stop (`fascicolo serve`, with the outbox worker and the orphan sweeper), or in a
//! task of its own (the benchmarks and the tests). Start-up is written once.

use crate::config::Config;
use anyhow::Context;
use fascicolo_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;

/// A bound, built platform, not yet serving.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: axum::Router,
    store: Arc<dyn Store>,
    cfg: Config,
    er: fascicolo_app::er::ErService,
}

impl Application {
    /// Binds `cfg.listen` (`127.0.0.1:0` picks a free port) and builds the application over
    /// `store`. Without a configured public URL, links and redirects use the bound address.
    pub async fn build(mut cfg: Config, store: Arc<dyn Store>) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind(&cfg.listen).await.with_context(|| format!("binding {}", cfg.listen))?;
        let addr = listener.local_addr()?;
        if cfg.public_url.is_none() {
            cfg.public_url = Some(format!("http://{addr}"));
        }
        let er = fascicolo_app::er::ErService::new(crate::fhir_service(&cfg, Arc::clone(&store)))
            .with_cuni_key(cfg.er.cuni_key(cfg.demo_mode()));
        let router = crate::build_router_with(Arc::clone(&store), &cfg, er.clone())?;
        Ok(Self { listener, addr, router, store, cfg, er })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The configuration it runs with (the public URL settled).
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Serves until `shutdown`, with the outbox worker and the orphan sweeper beside it; then
    /// stops them, lets their work in flight end and closes the store.
    pub async fn run_until_stopped(self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let Application { listener, router, store, cfg, er, .. } = self;
        let simulator = cfg.er.simulate.unwrap_or(cfg.demo_mode()).then(|| fascicolo_load::er_sim::spawn(er.clone()));
        let history = crate::spawn_er_history(er);
        let worker = crate::worker::spawn(
            crate::fhir_service(&cfg, Arc::clone(&store)),
            crate::worker::Channels::from_config(&cfg)?,
            cfg.public_url(),
        );
        let sweeper = crate::spawn_orphan_sweeper(&cfg, crate::fhir_service(&cfg, Arc::clone(&store)))?;
        let served = fascicolo_web::serve(listener, router, shutdown).await;
        worker.abort();
        sweeper.abort();
        history.abort();
        if let Some(s) = &simulator {
            s.abort();
        }
        // (cancelled: their work in flight ends before the store closes)
        let _ = worker.await;
        let _ = sweeper.await;
        if let Err(e) = store.close().await {
            tracing::warn!(error = %e, "the store did not close cleanly");
        }
        Ok(served?)
    }

    /// Builds the application on a free loopback port and serves it in a task of its own
    /// (benchmarks): its address and the task, which stops it when aborted.
    pub async fn spawn_on_loopback(
        cfg: &Config,
        store: Arc<dyn Store>,
    ) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<std::io::Result<()>>)> {
        let app = Self::build(Config { listen: "127.0.0.1:0".into(), public_url: None, ..cfg.clone() }, store).await?;
        Ok((app.addr(), app.spawn()))
    }

    /// Serves in a task of its own until the handle is aborted (benchmarks, tests).
    pub fn spawn(self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        tokio::spawn(fascicolo_web::serve(self.listener, self.router, std::future::pending()))
    }
}
