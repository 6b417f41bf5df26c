//! File content on disk: the folder (0700), writing a file into place whole or not at all, and
//! reading it back as a stream.
//!
//! A [`ContentWriter`] writes to `.tmp-<ulid>` in the files folder (mode 0600), and
//! [`ContentWriter::finish`] flushes, syncs and renames it to the file's id; one dropped
//! unfinished (an upload cut off, a size limit hit, an error) removes its temporary file. The
//! rename is within one folder, so it is atomic: a reader sees the whole file or none.

use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use super::StoreError;
use super::files::TEMP_PREFIX;

/// Bytes gathered before each write to disk (each write is a trip to a blocking thread).
const WRITE_BUFFER: usize = 256 * 1024;
/// Bytes per chunk when content is streamed back.
const READ_CHUNK: usize = 64 * 1024;

/// Creates the files folder (and its parents) with mode 0700 if it is missing.
pub(crate) fn create_dir(dir: &Path) -> Result<(), StoreError> {
    if dir.is_dir() {
        return Ok(());
    }
    crate::private_fs::create_dir_all(dir)
        .map_err(|source| StoreError::Content { path: dir.to_path_buf(), source })
}

/// Writes one file's content into place; see the module docs.
pub struct ContentWriter {
    file: BufWriter<tokio::fs::File>,
    temp: PathBuf,
    dest: PathBuf,
    bytes: u64,
    finished: bool,
}

impl ContentWriter {
    /// Starts the content of `dest` (a path in the files folder), writing to a temporary file
    /// beside it.
    pub(crate) async fn create(dest: PathBuf) -> Result<ContentWriter, StoreError> {
        let dir = dest.parent().map_or_else(PathBuf::new, Path::to_path_buf);
        let temp = dir.join(format!("{TEMP_PREFIX}{}", ulid::Ulid::new()));
        let mut options = crate::private_fs::tokio_write_options();
        options.create_new(true);
        let file =
            options.open(&temp).await.map_err(|source| StoreError::Content { path: temp.clone(), source })?;
        Ok(ContentWriter {
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            temp,
            dest,
            bytes: 0,
            finished: false,
        })
    }

    /// Appends `chunk`.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(chunk).await.map_err(|source| self.failed(source))?;
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and syncs the content, then renames it to its id; returns its size. Only now does
    /// the file exist under its id.
    pub async fn finish(mut self) -> Result<u64, StoreError> {
        self.file.flush().await.map_err(|source| self.failed(source))?;
        self.file.get_ref().sync_all().await.map_err(|source| self.failed(source))?;
        tokio::fs::rename(&self.temp, &self.dest)
            .await
            .map_err(|source| StoreError::Content { path: self.dest.clone(), source })?;
        self.finished = true;
        // Make the rename itself durable; the content is whole either way.
        if let Some(dir) = self.dest.parent()
            && let Ok(dir) = tokio::fs::File::open(dir).await
        {
            let _ = dir.sync_all().await;
        }
        Ok(self.bytes)
    }

    fn failed(&self, source: io::Error) -> StoreError {
        StoreError::Content { path: self.temp.clone(), source }
    }
}

impl Drop for ContentWriter {
    fn drop(&mut self) {
        if !self.finished {
            // Unlinking is quick; an error leaves the file for the next open's sweep.
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Writes every chunk of `chunks` through a [`ContentWriter`] to `dest`; the first error leaves
/// nothing behind.
pub(crate) async fn write_all<S, E>(dest: PathBuf, chunks: S) -> Result<u64, StoreError>
where
    S: Stream<Item = Result<Bytes, E>>,
    E: Into<io::Error>,
{
    let mut writer = ContentWriter::create(dest).await?;
    let mut chunks = std::pin::pin!(chunks);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| writer.failed(e.into()))?;
        writer.write(&chunk).await?;
    }
    writer.finish().await
}

/// The content at `path` as a stream of chunks, with its size.
pub async fn read_stream(
    path: &Path,
) -> Result<(u64, impl Stream<Item = io::Result<Bytes>> + use<>), StoreError> {
    let failed = |source| StoreError::Content { path: path.to_path_buf(), source };
    let file = tokio::fs::File::open(path).await.map_err(failed)?;
    let size = file.metadata().await.map_err(failed)?.len();
    let stream = futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buffer = BytesMut::with_capacity(READ_CHUNK);
        let read = file.read_buf(&mut buffer).await?;
        Ok((read > 0).then(|| (buffer.freeze(), file)))
    });
    Ok((size, stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn content_appears_under_its_id_only_when_finished() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let dest = dir.path().join("file-a");
        let mut writer = ContentWriter::create(dest.clone()).await?;
        writer.write(b"hello ").await?;
        writer.write(b"world").await?;
        assert!(!dest.exists(), "nothing under the id before finish");
        assert_eq!(writer.finish().await?, 11);
        assert_eq!(std::fs::read(&dest)?, b"hello world");
        assert_eq!(names(dir.path()), ["file-a"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&dest)?.permissions().mode() & 0o777, 0o600);
        }
        Ok(())
    }

    #[tokio::test]
    async fn an_unfinished_or_failed_write_leaves_nothing() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut writer = ContentWriter::create(dir.path().join("file-b")).await?;
        writer.write(b"half").await?;
        drop(writer);
        assert!(names(dir.path()).is_empty());
        let chunks =
            futures_util::stream::iter([Ok(Bytes::from_static(b"x")), Err(io::Error::other("cut off"))]);
        assert!(write_all(dir.path().join("file-c"), chunks).await.is_err());
        assert!(names(dir.path()).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn content_streams_back_byte_exact() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let chunks = futures_util::stream::iter(
            content.chunks(7_000).map(|c| Ok::<_, io::Error>(Bytes::copy_from_slice(c))),
        );
        assert_eq!(write_all(dir.path().join("file-d"), chunks).await?, content.len() as u64);
        let (size, stream) = read_stream(&dir.path().join("file-d")).await?;
        let back: Vec<Bytes> = stream.map(|c| c.unwrap_or_default()).collect().await;
        assert_eq!((size, back.concat()), (content.len() as u64, content));
        Ok(())
    }
}
