//! Reading the caches of Slurm Factory cells: every cache's index, a few at a time, each
//! failure kept as one line (a cell is still shown, or installed, from the caches that answer).

use futures_util::StreamExt;
use serde::Serialize;
use tracing::info;

use super::CacheUrl;
use crate::buildcache::{BuildcacheError, Catalog, IndexCache, Mirror};

/// One cache read (or not).
pub struct Probe {
    pub cache: CacheUrl,
    pub result: Result<Catalog, String>,
}

/// What became of one cache, as `slurm list` and `slurm install` report it.
#[derive(Debug, Clone, Serialize)]
pub struct CacheStatus {
    pub name: String,
    pub url: String,
    pub available: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Probe {
    pub fn status(&self) -> CacheStatus {
        CacheStatus {
            name: self.cache.name.clone(),
            url: self.cache.url.clone(),
            available: self.result.is_ok(),
            error: self.result.as_ref().err().cloned(),
        }
    }
}

/// Read the index of every cache, `jobs` at a time, keeping the order. `open` makes the mirror
/// of a cache URL (the caller's store options, offline mode and metadata cache) or says why not.
pub async fn probe_all<F>(
    caches: Vec<CacheUrl>,
    jobs: usize,
    open: F,
    index_cache: &IndexCache,
) -> Vec<Probe>
where
    F: Fn(&CacheUrl) -> Result<Mirror, String>,
{
    let open = &open;
    futures_util::stream::iter(caches)
        .map(|cache| async move {
            let result = match open(&cache) {
                Ok(mut m) => {
                    m.name = cache.name.clone();
                    Catalog::load(vec![m], index_cache)
                        .await
                        .map_err(|e| match e {
                            // The generic message advises on --mirror; here the URL is ours.
                            BuildcacheError::NotABuildcache { .. } => {
                                "no buildcache there (no v3 or v2 index)".to_string()
                            }
                            e => one_line(&e.to_string()),
                        })
                }
                Err(reason) => Err(one_line(&reason)),
            };
            if let Err(e) = &result {
                info!("{}: {e}", cache.url);
            }
            Probe { cache, result }
        })
        .buffered(jobs.max(1))
        .collect()
        .await
}

/// A message on one line (index errors can span several).
pub fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
