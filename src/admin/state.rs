//! The state files that let the other `sipedge` commands find a running edge or lab
//! without flags: its config, the addresses it bound, and its admin endpoint and token.
//!
//! One file per running process, `edges/<pid>.json` in `$XDG_RUNTIME_DIR/sipedge/` or else
//! `/tmp/sipedge-<uid>/`, so two labs never overwrite each other's; a file whose process
//! is gone is removed when found. The directory is 0700 and the files 0600, so only the
//! user who started the edge can read the token; a directory owned by someone else is
//! refused rather than trusted.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::peer::{Interface, Transport};

/// The folder of this user's state files.
pub fn default_dir() -> PathBuf {
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("sipedge"),
        None => tmp_dir(),
    };
    dir.join("edges")
}

/// What a running `sipedge run` or `sipedge lab` tells the other commands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Running {
    pub pid: u32,
    /// `run` or `lab`.
    pub kind: String,
    /// The config file it runs, absolute.
    pub config: PathBuf,
    /// `http://ADDR` of the admin endpoint, with its bearer token.
    pub endpoint: Option<String>,
    pub token: Option<String>,
    /// Every listener as bound (ephemeral ports resolved).
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub interface: Interface,
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Running {
    /// Where it listens for `interface` over `transport`.
    pub fn listener(&self, interface: Interface, transport: Transport) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|l| l.interface == interface && l.transport == transport)
            .map(|l| l.addr)
    }

    /// One line naming it, for a choice between several.
    pub fn describe(&self) -> String {
        format!(
            "pid {} (sipedge {}, {})",
            self.pid,
            self.kind,
            self.config.display()
        )
    }
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

/// Writes `r` as `dir/<pid>.json`, readable only by the user; the path written.
pub fn write(dir: &Path, r: &Running) -> io::Result<PathBuf> {
    ensure_private_dir(dir)?;
    let path = dir.join(format!("{}.json", r.pid));
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    let text = serde_json::to_string_pretty(r).map_err(io::Error::other)?;
    writeln!(f, "{text}")?;
    Ok(path)
}

/// Every edge or lab of this user still running, oldest first; files of processes that
/// are gone are removed.
pub fn running(dir: &Path) -> Vec<Running> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let parsed = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<Running>(&t).ok());
        match parsed {
            Some(r) if Path::new(&format!("/proc/{}", r.pid)).exists() => out.push(r),
            _ => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out.sort_by_key(|r| r.pid);
    out
}

/// The running edge a command should talk to: the one running `config` when one is given,
/// else the only one; several without a choice is an error that lists them.
pub fn choose(dir: &Path, config: Option<&Path>) -> Result<Option<Running>, String> {
    let all = running(dir);
    if let Some(c) = config {
        let want = std::fs::canonicalize(c).unwrap_or_else(|_| c.to_path_buf());
        return Ok(all.into_iter().find(|r| r.config == want));
    }
    match all.len() {
        0 => Ok(None),
        1 => Ok(all.into_iter().next()),
        _ => Err(format!(
            "{} edges are running: {}; choose one with --config FILE",
            all.len(),
            all.iter()
                .map(Running::describe)
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me(config: &Path) -> Running {
        Running {
            pid: std::process::id(),
            kind: "lab".into(),
            config: config.to_path_buf(),
            endpoint: Some("http://127.0.0.1:4567".into()),
            token: Some("t\"ok".into()),
            listeners: vec![Listener {
                interface: Interface::Internal,
                transport: Transport::Tls,
                addr: "127.0.0.2:40001".parse().unwrap(),
            }],
        }
    }

    #[test]
    fn a_running_edge_is_found_in_a_private_file_and_a_gone_one_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sipedge").join("edges");
        let path = write(&dir, &me(Path::new("/x/lab.toml"))).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dmode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(dmode & 0o777, 0o700);
        // A process that is gone: pid 0 is never a user process's.
        let mut gone = me(Path::new("/y/lab.toml"));
        gone.pid = 0;
        let stale = write(&dir, &gone).unwrap();
        assert_eq!(running(&dir), vec![me(Path::new("/x/lab.toml"))]);
        assert!(!stale.exists(), "the gone process's file is removed");
        let only = choose(&dir, None).unwrap().unwrap();
        assert_eq!(
            only.listener(Interface::Internal, Transport::Tls),
            Some("127.0.0.2:40001".parse().unwrap())
        );
        assert_eq!(
            choose(&dir, Some(Path::new("/elsewhere.toml"))).unwrap(),
            None
        );
    }
}
