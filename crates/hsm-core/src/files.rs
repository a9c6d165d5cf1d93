//! Writing files that hold keys or key material: atomically, and never world-readable.
//!
//! Every provider that keeps key files (the soft keystore, TPM key blobs) and the CLI's outputs
//! use [`write_atomic`], so a crash or a full disk leaves the old file or the new one, never a
//! torn mix.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::Path;

use rand::RngCore as _;

/// Who may read a file [`write_atomic`] creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileMode {
    /// Readable as the umask allows (public keys, signatures).
    Public,
    /// Owner only, mode 0600 (keystores, plaintexts).
    Private,
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, `fsync`,
/// `rename` over `path`, then `fsync` of the directory so the rename itself is durable.
///
/// Replaces an existing `path`; callers that must not overwrite check first. On error the
/// temporary file is removed and `path` is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: FileMode) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a file name"))?;
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(
        ".tmp-{}-{:08x}",
        std::process::id(),
        rand::thread_rng().next_u32()
    ));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(
            &mut options,
            match mode {
                FileMode::Public => 0o666,
                FileMode::Private => 0o600,
            },
        );
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        #[cfg(unix)]
        File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_atomically_and_leaves_no_temp_file() {
        let dir = std::env::temp_dir().join(format!("hsm-core-files-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.bin");
        write_atomic(&path, b"one", FileMode::Private).unwrap();
        write_atomic(&path, b"two", FileMode::Private).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let entries: Vec<_> = fs::read_dir(&dir).unwrap().collect();
        assert_eq!(entries.len(), 1, "temporary file left behind");
        assert!(write_atomic(&dir.join("missing/k.bin"), b"x", FileMode::Public).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
