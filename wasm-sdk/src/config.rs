//! Typed settings from the environment and from mounted ConfigMap and Secret volumes.
//!
//! Environment variables are fixed for the container's life. Files in a `configMap` or
//! `secret` volume follow their object: Bosun rewrites them (each file atomically) when the
//! object changes, so a long-running workload can pick up new settings without a restart
//! through [`Files::reload`].
//!
//! ```no_run
//! use bosun_sdk::config::{self, Files};
//!
//! let port: u16 = config::env_or("PORT", 8080)?;
//! let token: String = config::require("API_TOKEN")?;
//! let mut settings = Files::open("/etc/app")?;
//! let level = settings.get("log-level").unwrap_or("info");
//! # let _ = (port, token, level);
//! if settings.reload()? {
//!     // the ConfigMap changed: read the new values
//! }
//! # Ok::<(), config::Error>(())
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Why a setting could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A required variable is not set (or is empty).
    Missing { name: String },
    /// A variable or file holds something that does not parse as the wanted type.
    Invalid {
        name: String,
        value: String,
        reason: String,
    },
    /// A variable is not valid UTF-8.
    NotUnicode { name: String },
    /// A mounted directory or file could not be read.
    Io { path: PathBuf, reason: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing { name } => write!(f, "{name} is not set"),
            Error::Invalid {
                name,
                value,
                reason,
            } => write!(f, "{name}={value:?} is not valid: {reason}"),
            Error::NotUnicode { name } => write!(f, "{name} is not valid UTF-8"),
            Error::Io { path, reason } => write!(f, "cannot read {}: {reason}", path.display()),
        }
    }
}

impl std::error::Error for Error {}

/// The variable `name` parsed as `T`; `None` when it is not set or empty.
pub fn env<T>(name: &str) -> Result<Option<T>, Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    match std::env::var(name) {
        Ok(value) if value.is_empty() => Ok(None),
        Ok(value) => parse(name, &value).map(Some),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::NotUnicode {
            name: name.to_string(),
        }),
    }
}

/// The variable `name` parsed as `T`, or `default` when it is not set or empty.
pub fn env_or<T>(name: &str, default: T) -> Result<T, Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    Ok(env(name)?.unwrap_or(default))
}

/// The variable `name` parsed as `T`; an error when it is not set.
pub fn require<T>(name: &str) -> Result<T, Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    env(name)?.ok_or_else(|| Error::Missing {
        name: name.to_string(),
    })
}

/// `value` (of the setting `name`) parsed as `T`.
pub fn parse<T>(name: &str, value: &str) -> Result<T, Error>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    value.trim().parse().map_err(|e: T::Err| Error::Invalid {
        name: name.to_string(),
        value: value.to_string(),
        reason: e.to_string(),
    })
}

/// The files of a mounted ConfigMap or Secret volume: one file per key.
#[derive(Debug, Clone)]
pub struct Files {
    dir: PathBuf,
    values: BTreeMap<String, Vec<u8>>,
}

impl Files {
    /// Reads every file directly in `dir` (hidden files, such as a writer's temporary ones,
    /// are skipped).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        let values = read_dir(&dir)?;
        Ok(Self { dir, values })
    }

    /// The directory these files come from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keys (file names), sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }

    /// The value of `key` as text (`None` when there is no such file or it is not UTF-8;
    /// see [`Files::bytes`]). A trailing newline is kept, as the object holds it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.values
            .get(key)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The value of `key` as bytes (binaryData, or a Secret's data).
    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.values.get(key).map(Vec::as_slice)
    }

    /// The value of `key` parsed as `T` (surrounding whitespace ignored); `None` when there
    /// is no such file.
    pub fn parse<T>(&self, key: &str) -> Result<Option<T>, Error>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let Some(bytes) = self.values.get(key) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(bytes).map_err(|_| Error::NotUnicode {
            name: key.to_string(),
        })?;
        parse(key, text).map(Some)
    }

    /// Reads the directory again; true when any key or value changed.
    pub fn reload(&mut self) -> Result<bool, Error> {
        let values = read_dir(&self.dir)?;
        let changed = values != self.values;
        self.values = values;
        Ok(changed)
    }
}

fn read_dir(dir: &Path) -> Result<BTreeMap<String, Vec<u8>>, Error> {
    let io = |path: &Path, e: std::io::Error| Error::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let mut values = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        values.insert(name, std::fs::read(&path).map_err(|e| io(&path, e))?);
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_names_the_setting_and_the_reason() {
        assert_eq!(parse::<u16>("PORT", " 8080\n"), Ok(8080));
        let err = parse::<u16>("PORT", "eighty").unwrap_err();
        assert_eq!(
            err.to_string(),
            "PORT=\"eighty\" is not valid: invalid digit found in string"
        );
    }

    #[test]
    fn env_treats_empty_as_unset() {
        // Safety: the tests in this crate run on one thread (wasm has no others).
        unsafe {
            std::env::set_var("BOSUN_SDK_TEST_EMPTY", "");
            std::env::set_var("BOSUN_SDK_TEST_SET", "7");
        }
        assert_eq!(env::<u8>("BOSUN_SDK_TEST_EMPTY"), Ok(None));
        assert_eq!(env_or("BOSUN_SDK_TEST_UNSET", 3u8), Ok(3));
        assert_eq!(require::<u8>("BOSUN_SDK_TEST_SET"), Ok(7));
        assert_eq!(
            require::<u8>("BOSUN_SDK_TEST_UNSET")
                .unwrap_err()
                .to_string(),
            "BOSUN_SDK_TEST_UNSET is not set"
        );
    }

    #[test]
    fn files_read_keys_skip_hidden_ones_and_see_changes() {
        // WASI has no temporary directory: the runner mounts a writable one.
        let scratch = std::env::var("BOSUN_SDK_TEST_DIR").unwrap_or_else(|_| "/tmp".into());
        let dir = Path::new(&scratch).join("bosun-sdk-files");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("color"), "blue").unwrap();
        std::fs::write(dir.join("size"), "3\n").unwrap();
        std::fs::write(dir.join(".color.tmp"), "half-written").unwrap();
        let mut files = Files::open(&dir).unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), ["color", "size"]);
        assert_eq!(files.get("color"), Some("blue"));
        assert_eq!(files.parse::<u32>("size"), Ok(Some(3)));
        assert_eq!(files.parse::<u32>("missing"), Ok(None));
        assert!(!files.reload().unwrap());
        std::fs::write(dir.join("color"), "green").unwrap();
        assert!(files.reload().unwrap());
        assert_eq!(files.get("color"), Some("green"));
        std::fs::remove_file(dir.join("size")).unwrap();
        assert!(files.reload().unwrap());
        assert_eq!(files.get("size"), None);
        assert!(matches!(
            Files::open(dir.join("nope")),
            Err(Error::Io { .. })
        ));
    }
}
