//! The shipped `config.toml`, built into the binary, and where it keeps its files.
//!
//! `ferry` without `--config` reads `./config.toml`; when there is none (ferry installed with
//! `cargo install` and run from anywhere), it runs on this built-in copy of the repo's
//! `config.toml`, with the store and the logs under the per-user data directory
//! ([`user_data_dir`]). `ferry config init` writes the same text out for editing.

use std::path::{Path, PathBuf};

use super::{Config, ConfigError};

/// The repo's `config.toml`, as shipped.
pub const SHIPPED: &str = include_str!("../../config.toml");

/// The name messages give the built-in file.
pub const SHIPPED_NAME: &str = "(built-in config.toml)";

/// Where a config without a file keeps its data and logs: `$XDG_DATA_HOME/ferry` when that is
/// set to an absolute path, else `$HOME/.local/share/ferry` (the XDG base directory default).
pub fn user_data_dir() -> Result<PathBuf, ConfigError> {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"))
}

fn data_dir_from(
    xdg_data_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Result<PathBuf, ConfigError> {
    // The XDG spec: a relative $XDG_DATA_HOME is invalid and is ignored.
    if let Some(xdg) = xdg_data_home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Ok(xdg.join("ferry"));
    }
    match home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        Some(home) => Ok(home.join(".local").join("share").join("ferry")),
        None => Err(ConfigError::NoDataDir),
    }
}

impl Config {
    /// The built-in `config.toml` with its relative paths (the store, with its files beside it, and the logs) placed
    /// under `dir`.
    pub fn shipped_in(dir: &Path) -> Result<Config, ConfigError> {
        let mut config = Config::parse(SHIPPED, Path::new(SHIPPED_NAME))?;
        if config.storage.path.is_relative() {
            config.storage.path = dir.join(&config.storage.path);
        }
        if config.logging.dir.is_relative() {
            config.logging.dir = dir.join(&config.logging.dir);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xdg_data_home_wins_when_absolute_else_home() {
        let dir = |x: Option<&str>, h: Option<&str>| data_dir_from(x.map(Into::into), h.map(Into::into));
        assert_eq!(dir(Some("/x"), Some("/h")).ok(), Some(PathBuf::from("/x/ferry")));
        assert_eq!(dir(Some("rel"), Some("/h")).ok(), Some(PathBuf::from("/h/.local/share/ferry")));
        assert_eq!(dir(None, Some("/h")).ok(), Some(PathBuf::from("/h/.local/share/ferry")));
        assert!(matches!(dir(None, None), Err(ConfigError::NoDataDir)));
    }

    #[test]
    fn shipped_config_places_its_files_under_the_data_dir() {
        let config = Config::shipped_in(Path::new("/data/ferry")).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.storage.path, Path::new("/data/ferry/data/ferry.db"));
        assert_eq!(config.logging.dir, Path::new("/data/ferry/logs"));
    }
}
