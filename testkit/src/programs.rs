//! Where the database servers' programs are, as Debian's packages install them (or
//! `$PG_BIN` for PostgreSQL), with errors that say how to install them.

use std::io;
use std::path::{Path, PathBuf};

/// Where PostgreSQL's programs are: `$PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.
pub fn postgres_bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let version = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    let newest = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let bin = entry.path().join("bin");
            let version = version(entry.file_name().to_str()?)?;
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .max();
    newest.map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres).\n\
             Install it with `bash scripts/install-deps.sh` (Debian packages postgresql and \
             postgresql-contrib), or point PG_BIN at a directory holding initdb and postgres.",
        )
    })
}

/// The path of a PostgreSQL program (`initdb`, `postgres`, `pg_basebackup`, ...).
pub fn postgres_program(name: &str) -> io::Result<PathBuf> {
    let path = postgres_bin_dir()?.join(name);
    if !path.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is missing; install PostgreSQL with `bash scripts/install-deps.sh` or set PG_BIN",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// The path of a MariaDB program (`mariadbd`, `mariadb-install-db`, ...).
pub fn mariadb_program(name: &str) -> io::Result<PathBuf> {
    ["/usr/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "MariaDB is not installed ({name} is not in /usr/sbin or /usr/bin).\n\
                     Install it with `bash scripts/install-deps.sh` (Debian package mariadb-server)."
                ),
            )
        })
}
