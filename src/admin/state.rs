//! The state file that lets `sipedge admin` find a local edge without flags.
//!
//! `{ "endpoint": "http://127.0.0.1:PORT", "token": "…" }`, written by `sipedge run` when
//! the config has `[admin]`, in `$XDG_RUNTIME_DIR/sipedge/admin.json`, or else
//! `/tmp/sipedge-<uid>/admin.json`. The directory is 0700 and the file 0600, so only the
//! user who started the edge can read the token; a directory owned by someone else is
//! refused rather than trusted.

use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where the state file lives for this user.
pub fn default_path() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("sipedge"),
        None => tmp_dir(),
    };
    dir.join("admin.json")
}

/// This process's user id (the owner of `/proc/self`).
fn uid() -> u32 {
    std::fs::metadata("/proc/self").map_or(0, |m| m.uid())
}

/// Creates `dir` (and its missing parents) with mode 0700, and refuses a directory that
/// another user owns or others can read, since secrets (a token, lab keys) go there.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.uid() != uid() || meta.permissions().mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of this user (owner only, mode 0700); refusing to put secrets there",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// This user's fallback private directory when no XDG directory is set.
pub fn tmp_dir() -> PathBuf {
    PathBuf::from(format!("/tmp/sipedge-{}", uid()))
}

/// Writes the endpoint and token, readable only by the user.
pub fn write(path: &Path, endpoint: &str, token: &str) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        ensure_private_dir(dir)?;
    }
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(
        f,
        "{{ \"endpoint\": \"{}\", \"token\": \"{}\" }}",
        escape(endpoint),
        escape(token)
    )
}

/// Reads `(endpoint, token)` back.
pub fn read(path: &Path) -> io::Result<(String, String)> {
    let text = std::fs::read_to_string(path)?;
    let field = |name: &str| {
        string_field(&text, name).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} has no \"{name}\"", path.display()),
            )
        })
    };
    Ok((field("endpoint")?, field("token")?))
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The string value of `"name": "…"` in a flat JSON object.
fn string_field(text: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\"");
    let after = &text[text.find(&key)? + key.len()..];
    let after = after.trim_start().strip_prefix(':')?.trim_start();
    let mut chars = after.strip_prefix('"')?.chars();
    let mut out = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => out.push(chars.next()?),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("admin.json");
        write(&path, "http://127.0.0.1:4567", "t\"ok").unwrap();
        assert_eq!(
            read(&path).unwrap(),
            ("http://127.0.0.1:4567".to_string(), "t\"ok".to_string())
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o777, 0o700);
    }
}
