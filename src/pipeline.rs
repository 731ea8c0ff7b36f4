//! Wiring: source → parse → rules/plugins → sink, plus the API server.
//! (being wired by the lead; the signatures below are the CLI's contract)

use crate::config::Config;
use anyhow::{bail, Result};
use std::path::Path;

pub fn schema_text(_cfg: &Config) -> Result<String> {
    bail!("not wired yet")
}

pub fn check_rules(_cfg: &Config, _dir: &Path) -> Result<bool> {
    bail!("not wired yet")
}

pub async fn ingest(_cfg: Config, _listen: Option<String>) -> Result<()> {
    bail!("not wired yet")
}

pub async fn backfill(_cfg: Config, _progress: bool) -> Result<String> {
    bail!("not wired yet")
}

pub async fn serve(_cfg: Config, _listen: &str) -> Result<()> {
    bail!("not wired yet")
}
