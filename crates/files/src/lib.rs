//! Bounded reading of the files users and configs name (labels, routers, manifests,
//! datasets, configs, plans, benchmark results).
//!
//! Every reader here upholds three rules:
//! - **Only regular files.** A directory, FIFO, socket or device is an input error before a
//!   byte is read. The path is checked with `stat` (which never blocks), opened
//!   non-blocking (a FIFO swapped in between cannot stall the open) and checked again on
//!   the open descriptor.
//! - **Bounded size.** A file larger than the caller's limit is an error before reading,
//!   and reading stops at the limit even if the file grows meanwhile; a line is read only
//!   up to its own limit.
//! - **A read error ends the read.** [`Lines`] yields the error once and then stops, so a
//!   loop over a broken file cannot spin collecting errors; [`Malformed`] keeps only the
//!   first few malformed lines for the report and counts the rest.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Take};
use std::path::{Path, PathBuf};

/// Size limits used across the workspace, in bytes.
pub mod limits {
    /// TOML configs, router manifests, split files.
    pub const CONFIG: u64 = 4 << 20;
    /// Router weights (safetensors).
    pub const WEIGHTS: u64 = 512 << 20;
    /// JSONL/JSON data read line by line or whole: datasets, labels, plans, results.
    pub const DATA: u64 = 1 << 30;
    /// One line of a JSONL file.
    pub const LINE: usize = 16 << 20;
}

/// How many malformed lines a report keeps by default.
pub const MALFORMED_KEPT: usize = 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotAFile { path: PathBuf, kind: &'static str },
    #[error("{} is larger than the limit of {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
    #[error("cannot read {}{}: {source}", path.display(), at(*line))]
    Read {
        path: PathBuf,
        line: Option<usize>,
        #[source]
        source: std::io::Error,
    },
    #[error("{}{}: line longer than {max} bytes", path.display(), at(Some(*line)))]
    LineTooLong {
        path: PathBuf,
        line: usize,
        max: usize,
    },
    #[error("{}{}: not valid UTF-8", path.display(), at(*line))]
    NotUtf8 { path: PathBuf, line: Option<usize> },
}

fn at(line: Option<usize>) -> String {
    line.map(|n| format!(" line {n}")).unwrap_or_default()
}

impl FileError {
    /// The path the error is about.
    pub fn path(&self) -> &Path {
        match self {
            Self::Open { path, .. }
            | Self::NotAFile { path, .. }
            | Self::TooLarge { path, .. }
            | Self::Read { path, .. }
            | Self::LineTooLong { path, .. }
            | Self::NotUtf8 { path, .. } => path,
        }
    }

    /// The line an error is about, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            Self::Read { line, .. } | Self::NotUtf8 { line, .. } => *line,
            Self::LineTooLong { line, .. } => Some(*line),
            _ => None,
        }
    }

    /// The file does not exist (as opposed to existing and being unusable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// An error about one line that a line reader skips over ([`Lines`] continues after it).
    pub fn is_line_error(&self) -> bool {
        matches!(self, Self::NotUtf8 { line: Some(_), .. })
    }
}

fn kind_of(ft: std::fs::FileType) -> Option<&'static str> {
    if ft.is_file() {
        return None;
    }
    if ft.is_dir() {
        return Some("a directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return Some("a FIFO");
        }
        if ft.is_socket() {
            return Some("a socket");
        }
        if ft.is_char_device() || ft.is_block_device() {
            return Some("a device");
        }
    }
    Some("not a regular file")
}

/// Open `path` for reading if it is a regular file of at most `max` bytes.
pub fn open(path: &Path, max: u64) -> Result<File, FileError> {
    let meta = std::fs::metadata(path).map_err(|source| FileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    check(path, &meta, max)?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path).map_err(|source| FileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    // The path may have been replaced between the two looks: check what was opened.
    let meta = file.metadata().map_err(|source| FileError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    check(path, &meta, max)?;
    Ok(file)
}

fn check(path: &Path, meta: &std::fs::Metadata, max: u64) -> Result<(), FileError> {
    if let Some(kind) = kind_of(meta.file_type()) {
        return Err(FileError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > max {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(())
}

/// The whole file, if it is a regular file of at most `max` bytes.
pub fn read(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let file = open(path, max)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|source| FileError::Read {
            path: path.to_path_buf(),
            line: None,
            source,
        })?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

/// The whole file as UTF-8 text, if it is a regular file of at most `max` bytes.
pub fn read_to_string(path: &Path, max: u64) -> Result<String, FileError> {
    String::from_utf8(read(path, max)?).map_err(|_| FileError::NotUtf8 {
        path: path.to_path_buf(),
        line: None,
    })
}

/// True for an empty file or one whose last byte is a newline. An append-only JSONL file
/// (results, labels) whose writer was killed mid-line is false: end that line before
/// appending, so the next record starts on a line of its own.
pub fn ends_with_newline(path: &Path) -> std::io::Result<bool> {
    use std::io::{Seek, SeekFrom};
    let mut f = File::open(path)?;
    if f.metadata()?.len() == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::End(-1))?;
    let mut last = [0u8];
    f.read_exact(&mut last)?;
    Ok(last[0] == b'\n')
}

/// Lines of a regular file of at most `max` bytes, each of at most `max_line` bytes.
pub fn lines(path: &Path, max: u64, max_line: usize) -> Result<Lines<File>, FileError> {
    let file = open(path, max)?;
    Ok(Lines::new(file, path, max, max_line))
}

/// A line reader over any byte source: yields `(line number, text)` (1-based, without the
/// line ending). A non-UTF-8 line is a line error ([`FileError::is_line_error`]) and reading
/// goes on; any other error (a read error, a line or file over its limit) is yielded once
/// and ends the iteration.
pub struct Lines<R: Read> {
    reader: BufReader<Take<R>>,
    path: PathBuf,
    max: u64,
    max_line: usize,
    line: usize,
    consumed: u64,
    done: bool,
}

impl<R: Read> Lines<R> {
    pub fn new(source: R, path: &Path, max: u64, max_line: usize) -> Self {
        Self {
            reader: BufReader::new(source.take(max.saturating_add(1))),
            path: path.to_path_buf(),
            max,
            max_line,
            line: 0,
            consumed: 0,
            done: false,
        }
    }

    fn end(&mut self, e: FileError) -> Option<Result<(usize, String), FileError>> {
        self.done = true;
        Some(Err(e))
    }
}

impl<R: Read> Iterator for Lines<R> {
    type Item = Result<(usize, String), FileError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let mut buf = Vec::new();
        let limit = (self.max_line as u64).saturating_add(2); // the line, "\r\n"
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut buf);
        self.line += 1;
        let line = self.line;
        let n = match read {
            Err(source) => {
                return self.end(FileError::Read {
                    path: self.path.clone(),
                    line: Some(line),
                    source,
                })
            }
            Ok(0) => {
                self.done = true;
                return None;
            }
            Ok(n) => n,
        };
        self.consumed += n as u64;
        if self.consumed > self.max {
            return self.end(FileError::TooLarge {
                path: self.path.clone(),
                max: self.max,
            });
        }
        let ended = buf.last() == Some(&b'\n');
        if ended {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if buf.len() > self.max_line || (!ended && n as u64 == limit) {
            return self.end(FileError::LineTooLong {
                path: self.path.clone(),
                line,
                max: self.max_line,
            });
        }
        Some(
            String::from_utf8(buf)
                .map(|s| (line, s))
                .map_err(|_| FileError::NotUtf8 {
                    path: self.path.clone(),
                    line: Some(line),
                }),
        )
    }
}

/// The malformed lines of a file, for a report: the first `keep` with their reasons, and a
/// count of all of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    kept: Vec<(usize, String)>,
    total: usize,
    keep: usize,
}

impl Default for Malformed {
    fn default() -> Self {
        Self::new(MALFORMED_KEPT)
    }
}

impl Malformed {
    pub fn new(keep: usize) -> Self {
        Self {
            kept: Vec::new(),
            total: 0,
            keep,
        }
    }

    pub fn push(&mut self, line: usize, reason: impl Into<String>) {
        self.total += 1;
        if self.kept.len() < self.keep {
            self.kept.push((line, reason.into()));
        }
    }

    /// The first malformed lines (line number, reason).
    pub fn kept(&self) -> &[(usize, String)] {
        &self.kept
    }

    /// How many lines were malformed in all.
    pub fn total(&self) -> usize {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Add another file's malformed lines (kept up to this report's bound).
    pub fn extend(&mut self, other: Malformed) {
        for (line, reason) in other.kept {
            if self.kept.len() < self.keep {
                self.kept.push((line, reason));
            }
        }
        self.total += other.total;
    }
}

impl fmt::Display for Malformed {
    /// One line per kept entry, then "... and N more" when some were not kept.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (line, reason) in &self.kept {
            writeln!(f, "line {line}: {reason}")?;
        }
        if self.total > self.kept.len() {
            writeln!(f, "... and {} more", self.total - self.kept.len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(content).unwrap();
        f.flush().unwrap();
        f
    }

    #[test]
    fn a_directory_is_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let e = read(dir.path(), 100).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NotAFile {
                    kind: "a directory",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("is a directory"), "{e}");
        let e = lines(dir.path(), 100, 10).err().unwrap();
        assert!(matches!(e, FileError::NotAFile { .. }), "{e}");
    }

    #[cfg(unix)]
    #[test]
    fn devices_and_fifos_are_refused_without_blocking() {
        let e = read(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert!(
            matches!(
                e,
                FileError::NotAFile {
                    kind: "a device",
                    ..
                }
            ),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Opening a FIFO for reading with no writer would block forever; it is refused.
        let e = read(&fifo, 100).unwrap_err();
        assert!(
            matches!(e, FileError::NotAFile { kind: "a FIFO", .. }),
            "{e}"
        );
    }

    #[test]
    fn an_over_size_file_is_refused_and_a_missing_one_is_named() {
        let f = file(b"0123456789");
        assert_eq!(read(f.path(), 10).unwrap(), b"0123456789");
        let e = read(f.path(), 9).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { max: 9, .. }), "{e}");
        let e = read(Path::new("/nonexistent/x.jsonl"), 9).unwrap_err();
        assert!(e.is_not_found());
        assert!(e.to_string().contains("/nonexistent/x.jsonl"), "{e}");
        let e = read_to_string(file(b"\xff\xfe").path(), 9).unwrap_err();
        assert!(matches!(e, FileError::NotUtf8 { line: None, .. }), "{e}");
    }

    #[test]
    fn lines_are_numbered_and_a_bad_line_is_skipped() {
        let f = file(b"a\r\nbb\n\xff\nccc");
        let got: Vec<_> = lines(f.path(), 100, 10).unwrap().collect();
        assert_eq!(got.len(), 4);
        assert_eq!(got[0].as_ref().unwrap(), &(1, "a".to_string()));
        assert_eq!(got[1].as_ref().unwrap(), &(2, "bb".to_string()));
        assert!(got[2].as_ref().unwrap_err().is_line_error());
        assert_eq!(got[3].as_ref().unwrap(), &(4, "ccc".to_string()));
    }

    #[test]
    fn a_long_line_ends_the_read() {
        let f = file(b"ok\n0123456789abc\nnever\n");
        let got: Vec<_> = lines(f.path(), 100, 10).unwrap().collect();
        assert_eq!(got.len(), 2);
        let e = got[1].as_ref().unwrap_err();
        assert!(
            matches!(
                e,
                FileError::LineTooLong {
                    line: 2,
                    max: 10,
                    ..
                }
            ),
            "{e}"
        );
        // Exactly at the limit is fine, with either line ending.
        let f = file(b"0123456789\r\n0123456789");
        let got: Vec<_> = lines(f.path(), 100, 10)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(got.len(), 2);
    }

    /// A reader that fails on every call: the loop must end after one error.
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("broken"))
        }
    }

    #[test]
    fn a_read_error_is_yielded_once_and_ends_the_loop() {
        let got: Vec<_> = Lines::new(Broken, Path::new("b"), 100, 10).collect();
        assert_eq!(got.len(), 1);
        assert!(matches!(got[0], Err(FileError::Read { line: Some(1), .. })));
    }

    #[test]
    fn a_source_longer_than_its_limit_ends_the_read() {
        let data = b"a\nb\nc\nd\n".to_vec();
        let got: Vec<_> = Lines::new(&data[..], Path::new("x"), 5, 10).collect();
        assert!(got[..2].iter().all(Result::is_ok));
        assert!(
            matches!(got.last(), Some(Err(FileError::TooLarge { .. }))),
            "{got:?}"
        );
    }

    #[test]
    fn malformed_keeps_the_first_and_counts_all() {
        let mut m = Malformed::new(2);
        for i in 1..=5 {
            m.push(i, format!("bad {i}"));
        }
        assert_eq!(m.kept(), &[(1, "bad 1".into()), (2, "bad 2".into())]);
        assert_eq!(m.total(), 5);
        assert_eq!(
            m.to_string(),
            "line 1: bad 1\nline 2: bad 2\n... and 3 more\n"
        );
    }
}
