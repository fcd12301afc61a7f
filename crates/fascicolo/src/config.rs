//! Configuration: defaults, then an optional TOML file (`fascicolo.toml` in the working
//! directory or `--config FILE`), then `FASCICOLO_*` environment variables, then flags.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Folder for the SQLite database and the local blob store.
    pub data_dir: PathBuf,
    /// `postgres://...` switches the store to PostgreSQL; unset means SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Public base URL of the FHIR API (e.g. `https://fse.example/fhir/r4`), for links.
    pub base_url: Option<String>,
    /// Maximum PostgreSQL connections.
    pub pg_pool_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self { listen: "127.0.0.1:8080".into(), data_dir: PathBuf::from("./data"), database_url: None, base_url: None, pg_pool_size: 16 }
    }
}

impl Config {
    pub fn load(file: Option<&Path>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(f) => fig = fig.merge(Toml::file_exact(f)),
            None => fig = fig.merge(Toml::file("fascicolo.toml")),
        }
        fig = fig.merge(Env::prefixed("FASCICOLO_"));
        Ok(fig.extract()?)
    }
}
