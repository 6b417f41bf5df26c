//! Which config a command runs on: the file given, else `./config.toml`, else the built-in
//! config.toml with its files under the per-user data directory. Whatever the source, the
//! values are checked against the engine's bounds ([`check_bounds`]) as they are loaded, so
//! `ferry check` refuses what the engine would refuse, naming each key and its range.

use std::path::{Path, PathBuf};

use crate::config::{self, Config, ConfigError};
use crate::engine::check_bounds;

/// Where a loaded config came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// The built-in config.toml, with its data and logs under this directory.
    Shipped(PathBuf),
}

impl Source {
    /// The name to show: the file's path, or `(built-in config.toml)`.
    pub fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Shipped(_) => config::SHIPPED_NAME.to_string(),
        }
    }
}

/// Loads the config at `path`, else `./config.toml`, else the built-in one.
pub fn load(path: Option<PathBuf>) -> Result<(Config, Source), ConfigError> {
    let default = Path::new("config.toml");
    let path = match path {
        Some(path) => path,
        None if default.exists() => default.to_path_buf(),
        None => {
            let dir = config::user_data_dir()?;
            let config = within_bounds(Config::shipped_in(&dir)?, Path::new(config::SHIPPED_NAME))?;
            return Ok((config, Source::Shipped(dir)));
        }
    };
    let config = within_bounds(Config::load(&path)?, &path)?;
    Ok((config, Source::File(path)))
}

/// `config`, or every value of it outside the engine's bounds as a config problem of `path`.
pub fn within_bounds(config: Config, path: &Path) -> Result<Config, ConfigError> {
    match check_bounds(&config) {
        Ok(()) => Ok(config),
        Err(problems) => Err(ConfigError::Invalid { path: path.to_path_buf(), problems }),
    }
}
