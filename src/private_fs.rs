//! Owner-only files and folders: what ferry writes that may hold prompts, answers or keys (the
//! store, uploaded files, batch inputs and outputs, the stored API key) is created readable by
//! its owner only — mode 0700 for folders and 0600 for files on Unix; elsewhere the platform's
//! defaults. Every such file or folder is created through here.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` and any missing parents, owner-only.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options to open a file for writing that, if created, is owner-only; add `create`,
/// `create_new` or `truncate` as the caller needs.
pub fn write_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// [`write_options`] for tokio.
pub fn tokio_write_options() -> tokio::fs::OpenOptions {
    tokio::fs::OpenOptions::from(write_options())
}

/// Creates (or truncates) `path`, owner-only when created.
pub fn create_file(path: &Path) -> io::Result<std::fs::File> {
    write_options().create(true).truncate(true).open(path)
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn folders_are_0700_and_files_0600() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let nested = dir.path().join("a").join("b");
        create_dir_all(&nested)?;
        assert_eq!(std::fs::metadata(&nested)?.permissions().mode() & 0o777, 0o700);
        let file = nested.join("f");
        create_file(&file)?;
        assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
        let other = nested.join("g");
        write_options().create_new(true).open(&other)?;
        assert_eq!(std::fs::metadata(&other)?.permissions().mode() & 0o777, 0o600);
        Ok(())
    }
}
