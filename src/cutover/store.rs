//! The routing state on disk: one JSON file, replaced atomically (write a temporary file,
//! fsync, rename), so a crash leaves either the old or the new state, never half of one.

use std::io::Write;
use std::path::PathBuf;

use super::RoutingState;

const FILE: &str = "routing-state.json";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
pub struct StateFile {
    dir: PathBuf,
}

impl StateFile {
    pub fn new(dir: PathBuf) -> StateFile {
        StateFile { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    pub fn read(&self) -> Result<Option<RoutingState>, StoreError> {
        let path = self.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Read { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StoreError::Parse { path, source })
    }

    pub fn write(&self, state: &RoutingState) -> Result<(), StoreError> {
        let path = self.path();
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let mut f = std::fs::File::create(&tmp)?;
            let text = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
            f.write_all(&text)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            // The rename is durable once the directory is synced.
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|source| StoreError::Write { path, source })
    }
}
