//! The topology key file (`[topology] key_file`): text, one 32-byte key per line as 64 hex
//! digits or base64. The first line is the key that seals; the lines after it are previous
//! keys, still accepted for opening, so that dialogs set up before a rotation go on.
//! `sipedge rotate-key` prepends a fresh key and keeps [`KEPT_PREVIOUS`] of the others.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;

/// Bytes of one key.
pub const KEY_LEN: usize = 32;
/// Bytes of the id naming a key in a sealed value, so that opening needs no trial.
pub const KEY_ID_LEN: usize = 4;
/// How many previous keys a rotation keeps: a dialog outlives one rotation, not two.
pub const KEPT_PREVIOUS: usize = 1;

/// One topology key.
pub type Key = [u8; KEY_LEN];

/// Why the topology keys could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the topology key file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the topology key file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("topology key file {}, line {line}: {reason}; each line holds one 32-byte key as 64 hex digits or base64", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: &'static str,
    },
    #[error("topology key file {} holds no key; remove it to have one created", .0.display())]
    Empty(PathBuf),
    #[error("a topology key could not be set up for ChaCha20-Poly1305")]
    Unusable,
}

/// The id of `key`: the first bytes of its SHA-256, which tell nothing of the key itself.
pub fn key_id(key: &Key) -> [u8; KEY_ID_LEN] {
    let digest = ring::digest::digest(&ring::digest::SHA256, key);
    let mut id = [0u8; KEY_ID_LEN];
    id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
    id
}

/// The keys of the file at `path`, sealing key first; a missing file is created (mode
/// 0600) holding one fresh key.
pub fn load_or_create(path: &Path) -> Result<Vec<Key>, KeyFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path),
        Err(source) => Err(KeyFileError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Creates the file at `path` with one fresh key, whole or not at all: it is written aside
/// and linked into place, so an edge starting at the same moment reads either nothing or
/// the complete file, and whichever edge links first wins.
fn create(path: &Path) -> Result<Vec<Key>, KeyFileError> {
    let key = rand::random::<Key>();
    let tmp = beside(path);
    write_new(&tmp, &render(&[key]))?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            tracing::info!(file = %path.display(), "topology key file created with a fresh key");
            Ok(vec![key])
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read(path),
        Err(source) => Err(KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A private temporary name in the directory of `path`, unique to this call.
fn beside(path: &Path) -> PathBuf {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{:016x}.tmp", rand::random::<u64>()));
    PathBuf::from(tmp)
}

/// The keys of an existing file, sealing key first.
pub fn read(path: &Path) -> Result<Vec<Key>, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Prepends a fresh key to the file at `path` and keeps [`KEPT_PREVIOUS`] of its keys; the
/// keys now in it, the new sealing key first. The file is replaced whole (mode 0600), so a
/// reader never sees half of it.
pub fn rotate(path: &Path) -> Result<Vec<Key>, KeyFileError> {
    let old = read(path)?;
    let keys: Vec<Key> = std::iter::once(rand::random::<Key>())
        .chain(old.into_iter().take(KEPT_PREVIOUS))
        .collect();
    let tmp = beside(path);
    write_new(&tmp, &render(&keys))?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        KeyFileError::Write {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(keys)
}

/// The keys of a key file's text, in file order; blank lines are skipped.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Key>, KeyFileError> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let key = decode_key(line).map_err(|reason| KeyFileError::Malformed {
            path: path.to_path_buf(),
            line: i + 1,
            reason,
        })?;
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(KeyFileError::Empty(path.to_path_buf()));
    }
    Ok(keys)
}

/// The file text of `keys`: one lowercase hex key per line.
pub fn render(keys: &[Key]) -> String {
    let mut out = String::with_capacity(keys.len() * (2 * KEY_LEN + 1));
    for key in keys {
        for b in key {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('\n');
    }
    out
}

/// One line's key: 64 hex digits, else base64 (padded or not) of 32 bytes.
fn decode_key(line: &str) -> Result<Key, &'static str> {
    let bytes = if line.len() == 2 * KEY_LEN && line.bytes().all(|b| b.is_ascii_hexdigit()) {
        (0..KEY_LEN)
            .map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| "not hex")?
    } else {
        STANDARD
            .decode(line)
            .or_else(|_| STANDARD_NO_PAD.decode(line))
            .map_err(|_| "neither 64 hex digits nor base64")?
    };
    Key::try_from(bytes.as_slice()).map_err(|_| "not 32 bytes long")
}

/// Writes `text` to a file that must not exist yet, readable by its owner only.
fn write_new(path: &Path, text: &str) -> Result<(), KeyFileError> {
    let err = |source| KeyFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}
