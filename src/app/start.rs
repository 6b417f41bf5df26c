//! [`App::start`]: the one composition root. Every door starts ferry here, in this order:
//!
//! 1. the store (SQLite: chats, settings, files), opened and migrated — first, so a database
//!    that cannot be opened stops ferry before any actor runs;
//! 2. the engine ([`Engine::start`]: the supervisor starts its actors in its own order);
//! 3. the settings stored through `PUT /v1/settings`, applied over `config.toml`;
//! 4. the batch-job machinery, over the engine and the same database.
//!
//! A step that fails stops what the earlier ones started. Nothing is resumed and no door is
//! open yet: the caller resumes jobs ([`App::resume_batches`]) once its door is up.

use std::sync::Arc;
use std::time::Duration;

use super::{App, AppError};
use crate::config::Config;
use crate::engine::{Engine, ShutdownReport};
use crate::jobs::{InputLimits, JobError, Jobs, WorkerSettings};
use crate::store::Store;

/// How often the store's housekeeping runs (retention, expired files) in a server.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// What ferry is started for: the doors differ in what the job machinery takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A server (`ferry serve`, the console): batch inputs within `[files]` limits, output files
    /// kept in the Files API for `[files] output_lifetime_secs`, the store's housekeeping on.
    Serve,
    /// `ferry run FILE`: the caller's own file, with no size limit, and its output written where
    /// the caller said, not into the Files API.
    Run,
}

impl App {
    /// Starts the store, the engine, the stored settings and the job machinery for `config`
    /// (see the module docs). Call inside a running `actix::System`.
    pub async fn start(config: Config, purpose: Purpose) -> Result<App, AppError> {
        let config = Arc::new(config);
        let store = Store::open(&config.storage.path).map_err(|source| store_error(&config, source))?;
        if purpose == Purpose::Serve {
            store.spawn_retention(&config.storage, HOUSEKEEPING_EVERY);
        }
        let engine = Engine::start(&config)?;
        match App::finish_start(engine.clone(), Arc::clone(&config), store, purpose).await {
            Ok(app) => Ok(app),
            Err(error) => {
                engine.shutdown(Duration::ZERO).await;
                Err(error)
            }
        }
    }

    /// Steps 3 and 4, once the engine runs.
    async fn finish_start(
        engine: Engine,
        config: Arc<Config>,
        store: Store,
        purpose: Purpose,
    ) -> Result<App, AppError> {
        super::settings::apply_stored(&engine, &store).await?;
        let jobs = match purpose {
            Purpose::Serve => Jobs::for_config(engine.clone(), &config),
            Purpose::Run => {
                let settings = WorkerSettings {
                    db_path: config.storage.path.clone(),
                    files_dir: crate::store::files_dir_of(&config.storage.path),
                    limits: InputLimits { max_lines: u64::MAX, max_bytes: u64::MAX },
                    upstreams: Arc::from(config.upstreams.clone()),
                    output_lifetime_secs: 0,
                };
                Jobs::start(engine.clone(), settings, config.jobs.max_in_flight)
            }
        };
        let jobs = jobs.map_err(|error| match error {
            JobError::Store(source) => store_error(&config, source),
            other => AppError::Jobs(other),
        })?;
        Ok(App { engine, config, store, jobs })
    }

    /// Stops ferry's work in order: batch jobs stop sending (waiting up to `jobs_grace` for them
    /// to store what arrives), the engine stops intake and drains queued and in-flight items for
    /// `engine_grace`, answering what is left "shutting down". Open doors first stop taking
    /// requests; the store is still open after this (flush it once the doors are closed).
    pub async fn drain(&self, jobs_grace: Duration, engine_grace: Duration) -> ShutdownReport {
        let jobs_stopped = self.jobs.stop(jobs_grace);
        let report = self.engine.shutdown(engine_grace).await;
        jobs_stopped.await;
        report
    }
}

fn store_error(config: &Config, source: crate::store::StoreError) -> AppError {
    AppError::Store { path: config.storage.path.display().to_string(), source }
}
