//! The data directory's lock: one process at a time writes a data directory.
//!
//! Two servers on one directory would both append to the log from seq 1 and both index it,
//! losing events each of them acknowledged. So every process that writes the directory (the
//! embedded store or the embedded queue) holds an advisory lock (`flock`) on `LOCK` in it
//! for its whole life; a second one refuses to start, naming the holder. The kernel releases
//! the lock when the holder exits in any way, `kill -9` included, so a restart after a crash
//! is never blocked by a stale lock.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The lock file's name in the data directory; it holds the pid of the process holding it.
pub const LOCK_FILE: &str = "LOCK";

/// A held lock on a data directory, released when dropped (or when the process ends).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
    dir: PathBuf,
}

impl DataDirLock {
    /// Creates `dir` if needed and locks it, or says which process holds it.
    pub fn acquire(dir: &Path) -> Result<DataDirLock> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("invalid --data-dir: cannot create {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match try_lock(&file) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = match holder.trim() {
                    "" => "another process".to_owned(),
                    pid => format!("process {pid}"),
                };
                anyhow::bail!(
                    "the data directory {} is in use by {holder} (it holds {}); \
                     one process per data directory: stop it or choose another --data-dir",
                    dir.display(),
                    path.display()
                );
            }
            Err(err) => return Err(err).with_context(|| format!("cannot lock {}", path.display())),
        }
        // Only the holder writes its pid, so the refusal above can name it.
        file.set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(DataDirLock {
            _file: file,
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// An exclusive `flock` on `file`, without waiting. It belongs to the open file (not the
/// process): dropped with it, and released by the kernel when the process dies.
fn try_lock(file: &File) -> io::Result<()> {
    // SAFETY: flock on a descriptor `file` owns for the duration of the call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDirLock::acquire(dir.path()).unwrap();
        let err = DataDirLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
        assert!(
            err.contains(&format!("process {}", std::process::id())),
            "{err}"
        );
        drop(first);
        DataDirLock::acquire(dir.path()).expect("free again once dropped");
    }
}
