//! Configuration: a `kiln.toml` file, `KILN_*` environment variables and command-line flags,
//! in that order of precedence (a flag beats a variable, which beats the file).
//!
//! Every setting is a flag of `kiln scheduler` or `kiln worker` (and of a user's worker
//! binary), so there is one parser and one validation: the file's and the environment's values
//! are turned into flags placed before the user's own ([`layer`]), and clap, told that a later
//! occurrence overrides an earlier one, keeps the user's. The same walk records where each value
//! came from, for `kiln config`.
//!
//! The file is the first of `$KILN_CONFIG`, `./kiln.toml`, `$XDG_CONFIG_HOME/kiln/kiln.toml`,
//! `~/.config/kiln/kiln.toml` and `/etc/kiln/kiln.toml` that exists (one file, not a merge, so
//! what is in force is always one file away). A key the file should not have is an error naming
//! the key and the file; relative paths in it are relative to the file's directory.
//!
//! ```toml
//! [scheduler]
//! port = 8786
//! scheduler-file = "/shared/scheduler.json"
//!
//! [worker]
//! nthreads = 4
//! memory-limit = "8GiB"
//! death-timeout = 60
//!
//! [security]
//! ca-file = "ca.pem"
//! require-encryption = true
//! auth-token-file = "token"
//! scheduler = { cert = "scheduler.pem", key = "scheduler-key.pem" }
//! worker = { cert = "worker.pem", key = "worker-key.pem" }
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The command a setting belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    /// `kiln scheduler`.
    Scheduler,
    /// `kiln worker` (and a user's worker binary).
    Worker,
    /// A client's security ([`client_security`]).
    Client,
}

impl Section {
    /// `scheduler` or `worker`.
    pub fn name(self) -> &'static str {
        match self {
            Section::Scheduler => "scheduler",
            Section::Worker => "worker",
            Section::Client => "client",
        }
    }
}

/// How a setting's value becomes a flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--flag VALUE`.
    Value,
    /// `--flag VALUE`, a path: relative to the config file's directory.
    Path,
    /// `--flag` when true.
    Switch,
    /// A positional argument, used when the command line has none.
    Positional,
}

/// One setting: its key in the file, its variable, the clap argument it feeds.
#[derive(Debug, Clone, Copy)]
struct Setting {
    section: Section,
    key: &'static str,
    env: &'static str,
    /// The clap argument id (the field name).
    id: &'static str,
    kind: Kind,
}

const fn s(section: Section, key: &'static str, env: &'static str, id: &'static str, kind: Kind) -> Setting {
    Setting { section, key, env, id, kind }
}

use Kind::{Path as P, Positional, Switch, Value as V};
use Section::{Scheduler as Sch, Worker as Wrk};

/// Every setting. Security keys appear once per section: the CA and the switches are shared,
/// the certificate is the role's own.
const SETTINGS: &[Setting] = &[
    s(Sch, "scheduler.host", "KILN_SCHEDULER_HOST", "host", V),
    s(Sch, "scheduler.port", "KILN_SCHEDULER_PORT", "port", V),
    s(Sch, "scheduler.worker-timeout", "KILN_WORKER_TIMEOUT", "worker_timeout", V),
    s(Sch, "scheduler.no-workers-timeout", "KILN_NO_WORKERS_TIMEOUT", "no_workers_timeout", V),
    s(Sch, "scheduler.scheduler-file", "KILN_SCHEDULER_FILE", "scheduler_file", P),
    s(Sch, "scheduler.dashboard-address", "KILN_DASHBOARD_ADDRESS", "dashboard_address", V),
    s(Sch, "scheduler.no-dashboard", "KILN_NO_DASHBOARD", "no_dashboard", Switch),
    s(Sch, "scheduler.metrics-namespace", "KILN_METRICS_NAMESPACE", "metrics_namespace", V),
    s(Sch, "security.ca-file", "KILN_TLS_CA_FILE", "tls_ca_file", P),
    s(Sch, "security.scheduler.cert", "KILN_TLS_CERT", "tls_cert", P),
    s(Sch, "security.scheduler.key", "KILN_TLS_KEY", "tls_key", P),
    s(Sch, "security.min-version", "KILN_TLS_MIN_VERSION", "tls_min_version", V),
    s(Sch, "security.require-encryption", "KILN_REQUIRE_ENCRYPTION", "require_encryption", Switch),
    s(Sch, "security.auth-token-file", "KILN_AUTH_TOKEN_FILE", "auth_token", P),
    s(Wrk, "worker.scheduler", "KILN_SCHEDULER_ADDRESS", "scheduler", Positional),
    s(Wrk, "worker.scheduler-file", "KILN_SCHEDULER_FILE", "scheduler_file", P),
    s(Wrk, "worker.nthreads", "KILN_WORKER_NTHREADS", "nthreads", V),
    s(Wrk, "worker.memory-limit", "KILN_WORKER_MEMORY_LIMIT", "memory_limit", V),
    s(Wrk, "worker.name", "KILN_WORKER_NAME", "name", V),
    s(Wrk, "worker.host", "KILN_WORKER_HOST", "host", V),
    s(Wrk, "worker.port", "KILN_WORKER_PORT", "port", V),
    s(Wrk, "worker.local-directory", "KILN_LOCAL_DIRECTORY", "local_directory", P),
    s(Wrk, "worker.no-nanny", "KILN_NO_NANNY", "no_nanny", Switch),
    s(Wrk, "worker.death-timeout", "KILN_DEATH_TIMEOUT", "death_timeout", V),
    s(Wrk, "worker.dashboard-address", "KILN_WORKER_DASHBOARD_ADDRESS", "dashboard_address", V),
    s(Wrk, "worker.metrics-namespace", "KILN_METRICS_NAMESPACE", "metrics_namespace", V),
    s(Wrk, "security.ca-file", "KILN_TLS_CA_FILE", "tls_ca_file", P),
    s(Wrk, "security.worker.cert", "KILN_TLS_CERT", "tls_cert", P),
    s(Wrk, "security.worker.key", "KILN_TLS_KEY", "tls_key", P),
    s(Wrk, "security.min-version", "KILN_TLS_MIN_VERSION", "tls_min_version", V),
    s(Wrk, "security.require-encryption", "KILN_REQUIRE_ENCRYPTION", "require_encryption", Switch),
    s(Wrk, "security.auth-token-file", "KILN_AUTH_TOKEN_FILE", "auth_token", P),
    s(Section::Client, "security.ca-file", "KILN_TLS_CA_FILE", "tls_ca_file", P),
    s(Section::Client, "security.client.cert", "KILN_TLS_CERT", "tls_cert", P),
    s(Section::Client, "security.client.key", "KILN_TLS_KEY", "tls_key", P),
    s(Section::Client, "security.min-version", "KILN_TLS_MIN_VERSION", "tls_min_version", V),
    s(Section::Client, "security.require-encryption", "KILN_REQUIRE_ENCRYPTION", "require_encryption", Switch),
    s(Section::Client, "security.auth-token-file", "KILN_AUTH_TOKEN_FILE", "auth_token", P),
];

/// Keys a file may hold that no setting above reads (none now: the client's certificate is
/// read by [`client_security`]).
const OTHER_KEYS: &[&str] = &[];

/// A client's [`Security`](crate::Security) from `file` and the `KILN_*` variables (as for the
/// scheduler and workers, a variable beats the file): `security.ca-file`,
/// `security.client.cert` and `.key`, `security.min-version`, `security.require-encryption`,
/// `security.auth-token-file` (or `KILN_AUTH_TOKEN`). Use it as
/// `Client::connect_with(address, &client_security(&ConfigFile::find()?)?)`.
///
/// # Errors
/// A value of the wrong type, or a file named there that cannot be read or holds the wrong
/// thing (named in the message).
pub fn client_security(file: &ConfigFile) -> Result<crate::Security, ConfigError> {
    client_security_with(file, |name| std::env::var_os(name))
}

fn client_security_with(
    file: &ConfigFile,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<crate::Security, ConfigError> {
    use clap::{Args, FromArgMatches};
    let command = crate::SecurityArgs::augment_args(clap::Command::new("client")).args_override_self(true);
    let layered = layer_with(Section::Client, &command, &[], file, env)?;
    let settings = command
        .try_get_matches_from(&layered.args)
        .and_then(|m| crate::SecurityArgs::from_arg_matches(&m))
        .map_err(|e| ConfigError::Security(e.to_string()))?;
    settings.to_security(crate::TlsRole::Client).map_err(|e| ConfigError::Security(e.to_string()))
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not TOML.
    #[error("config file {}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The file has a key kiln does not know.
    #[error("unknown key `{key}` in config file {} (known keys: {known})", path.display())]
    UnknownKey {
        /// The key, dotted.
        key: String,
        /// The file.
        path: PathBuf,
        /// The keys it could have been.
        known: String,
    },
    /// The client's security settings do not make a [`Security`](crate::Security).
    #[error("client security settings: {0}")]
    Security(String),
    /// A value of the wrong type (in the file or a variable).
    #[error("{key} in {origin}: {message}")]
    BadValue {
        /// The key or variable.
        key: String,
        /// Where it was set.
        origin: String,
        /// What was expected.
        message: String,
    },
}

/// A `kiln.toml`, flattened to dotted keys.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// Where it was read from (`None`: no file was found).
    pub path: Option<PathBuf>,
    values: BTreeMap<String, toml::Value>,
}

/// The places searched for `kiln.toml`, in order.
pub fn search_path() -> Vec<PathBuf> {
    let mut places = Vec::new();
    if let Some(explicit) = std::env::var_os("KILN_CONFIG") {
        places.push(PathBuf::from(explicit));
    }
    places.push(PathBuf::from("kiln.toml"));
    if let Some(xdg) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        places.push(PathBuf::from(xdg).join("kiln/kiln.toml"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        places.push(PathBuf::from(home).join(".config/kiln/kiln.toml"));
    }
    places.push(PathBuf::from("/etc/kiln/kiln.toml"));
    places
}

impl ConfigFile {
    /// The first file of [`search_path`] that exists (an explicit `$KILN_CONFIG` must exist),
    /// or an empty configuration.
    ///
    /// # Errors
    /// A file that cannot be read, is not TOML, or has an unknown key.
    pub fn find() -> Result<ConfigFile, ConfigError> {
        if let Some(explicit) = std::env::var_os("KILN_CONFIG") {
            return ConfigFile::load(Path::new(&explicit));
        }
        match search_path().into_iter().find(|p| p.is_file()) {
            Some(path) => ConfigFile::load(&path),
            None => Ok(ConfigFile::default()),
        }
    }

    /// Reads and checks the file at `path`.
    ///
    /// # Errors
    /// As [`ConfigFile::find`].
    pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        ConfigFile::parse(&text, path)
    }

    /// Checks `text` as if read from `path`.
    ///
    /// # Errors
    /// Not TOML, or an unknown key.
    pub fn parse(text: &str, path: &Path) -> Result<ConfigFile, ConfigError> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: path.to_path_buf(), message: e.to_string() })?;
        let mut values = BTreeMap::new();
        // Tables nest at most three deep (security.worker.cert): a work list, not recursion.
        let mut pending: Vec<(String, toml::Value)> = table.into_iter().collect();
        while let Some((key, value)) = pending.pop() {
            match value {
                toml::Value::Table(inner) if !is_known(&key) => {
                    if !SETTINGS.iter().any(|s| s.key.starts_with(&format!("{key}."))) {
                        return Err(unknown(&key, path));
                    }
                    pending.extend(inner.into_iter().map(|(k, v)| (format!("{key}.{k}"), v)));
                }
                value => {
                    if !is_known(&key) {
                        return Err(unknown(&key, path));
                    }
                    values.insert(key, value);
                }
            }
        }
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(ConfigFile { path: Some(path), values })
    }

    /// The value of a dotted key, if the file sets it.
    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.values.get(key)
    }
}

fn is_known(key: &str) -> bool {
    SETTINGS.iter().any(|s| s.key == key) || OTHER_KEYS.contains(&key)
}

fn unknown(key: &str, path: &Path) -> ConfigError {
    let mut known: Vec<&str> = SETTINGS.iter().map(|s| s.key).chain(OTHER_KEYS.iter().copied()).collect();
    known.sort_unstable();
    known.dedup();
    ConfigError::UnknownKey { key: key.to_string(), path: path.to_path_buf(), known: known.join(", ") }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The command's default.
    Default,
    /// The config file.
    File(PathBuf),
    /// An environment variable.
    Env(&'static str),
    /// The command line.
    Flag,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Flag => f.write_str("flag"),
        }
    }
}

/// One setting in force, for `kiln config`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The dotted key.
    pub key: &'static str,
    /// The value (`None`: unset).
    pub value: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// A command line with the file's and the environment's settings put in.
#[derive(Debug, Clone)]
pub struct Layered {
    /// The arguments to parse: the program name, the settings as flags, then the user's own.
    pub args: Vec<OsString>,
    /// Every setting of the section, its value and where it came from.
    pub lines: Vec<Line>,
}

/// Puts the file's and the environment's settings for `section` into the command line
/// `user_args` (without the program name) of `command` (a command with `args_override_self`,
/// whose argument ids are the settings' ids).
///
/// # Errors
/// A variable or file value of the wrong type.
pub fn layer(
    section: Section,
    command: &clap::Command,
    user_args: &[OsString],
    file: &ConfigFile,
) -> Result<Layered, ConfigError> {
    layer_with(section, command, user_args, file, |name| std::env::var_os(name))
}

fn layer_with(
    section: Section,
    command: &clap::Command,
    user_args: &[OsString],
    file: &ConfigFile,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Layered, ConfigError> {
    let program = OsString::from(command.get_name());
    let given = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(std::iter::once(program.clone()).chain(user_args.iter().cloned()))
        .ok();
    let on_command_line = |id: &str| {
        given.as_ref().is_some_and(|m| {
            m.try_contains_id(id).unwrap_or(false) && m.value_source(id) == Some(clap::parser::ValueSource::CommandLine)
        })
    };
    let mut injected: Vec<OsString> = Vec::new();
    let mut trailing: Vec<OsString> = Vec::new();
    let mut origins: Vec<(Setting, Origin)> = Vec::new();
    for setting in SETTINGS.iter().filter(|s| s.section == section) {
        let Some(arg) = command.get_arguments().find(|a| a.get_id() == setting.id) else { continue };
        if on_command_line(setting.id) {
            origins.push((*setting, Origin::Flag));
            continue;
        }
        let (value, origin) = if let Some(value) = env(setting.env) {
            (Raw::Env(value), Origin::Env(setting.env))
        } else if let Some(value) = file.get(setting.key) {
            (Raw::File(value.clone()), Origin::File(file.path.clone().unwrap_or_default()))
        } else {
            origins.push((*setting, Origin::Default));
            continue;
        };
        let flag = arg.get_long().map(|l| OsString::from(format!("--{l}")));
        match (setting.kind, flag) {
            (Kind::Switch, Some(flag)) => {
                if value.as_bool(setting, &origin)? {
                    injected.push(flag);
                }
            }
            (Kind::Positional, _) => trailing.push(value.as_text(setting, &origin, None)?),
            (kind, Some(flag)) => {
                let base = (kind == Kind::Path).then(|| file.path.as_deref().and_then(Path::parent)).flatten();
                injected.push(flag);
                injected.push(value.as_text(setting, &origin, base)?);
            }
            (_, None) => continue,
        }
        origins.push((*setting, origin));
    }
    let mut args = vec![program];
    args.extend(injected);
    args.extend(user_args.iter().cloned());
    args.extend(trailing);
    // The values in force, read back through the same parser.
    let merged = command.clone().ignore_errors(true).try_get_matches_from(args.clone()).ok();
    let lines = origins
        .into_iter()
        .map(|(setting, origin)| {
            let value = merged.as_ref().and_then(|m| {
                let raw: Vec<String> =
                    m.try_get_raw(setting.id).ok()??.map(|v| v.to_string_lossy().into_owned()).collect();
                (!raw.is_empty()).then(|| raw.join(" "))
            });
            Line { key: setting.key, value, origin }
        })
        .collect();
    Ok(Layered { args, lines })
}

/// A value from a variable or the file.
enum Raw {
    Env(OsString),
    File(toml::Value),
}

impl Raw {
    fn as_bool(&self, setting: &Setting, origin: &Origin) -> Result<bool, ConfigError> {
        let bad = || ConfigError::BadValue {
            key: setting.key.to_string(),
            origin: origin.to_string(),
            message: "expected true or false".into(),
        };
        match self {
            Raw::File(toml::Value::Boolean(b)) => Ok(*b),
            Raw::File(_) => Err(bad()),
            Raw::Env(v) => match v.to_string_lossy().trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" | "" => Ok(false),
                _ => Err(bad()),
            },
        }
    }

    fn as_text(&self, setting: &Setting, origin: &Origin, base: Option<&Path>) -> Result<OsString, ConfigError> {
        match self {
            Raw::Env(v) => Ok(v.clone()),
            Raw::File(value) => {
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    _ => {
                        return Err(ConfigError::BadValue {
                            key: setting.key.to_string(),
                            origin: origin.to_string(),
                            message: "expected a string or a number".into(),
                        });
                    }
                };
                Ok(match base {
                    Some(dir) if Path::new(&text).is_relative() => dir.join(text).into_os_string(),
                    _ => OsString::from(text),
                })
            }
        }
    }
}

/// The lines of `kiln config`: every setting with its value and origin, aligned.
pub fn render(file: &ConfigFile, lines: &[Line]) -> String {
    let mut out = match &file.path {
        Some(path) => format!("# config file: {}\n", path.display()),
        None => {
            let searched: Vec<String> = search_path().iter().map(|p| p.display().to_string()).collect();
            format!("# no config file (searched {})\n", searched.join(", "))
        }
    };
    let width = lines.iter().map(|l| l.key.len() + l.value.as_deref().map_or(6, |v| v.len() + 3)).max().unwrap_or(0);
    for line in lines {
        let shown = match &line.value {
            Some(v) => format!("{} = {v:?}", line.key),
            None => format!("{} (unset)", line.key),
        };
        out.push_str(&format!("{shown:<width$}  # {}\n", line.origin, width = width + 4));
    }
    if std::env::var_os("KILN_AUTH_TOKEN").is_some() {
        out.push_str("security.auth-token = <hidden>  # env KILN_AUTH_TOKEN\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, Command};

    fn worker_command() -> Command {
        crate::WorkerArgs::augment_args(Command::new("worker")).args_override_self(true)
    }

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn value<'a>(layered: &'a Layered, key: &str) -> (&'a str, &'a Origin) {
        let line = layered.lines.iter().find(|l| l.key == key).unwrap();
        (line.value.as_deref().unwrap_or("(unset)"), &line.origin)
    }

    #[test]
    fn a_flag_beats_a_variable_which_beats_the_file() {
        let path = Path::new("/etc/kiln/kiln.toml");
        let file = ConfigFile::parse(
            "[worker]\nnthreads = 2\nmemory-limit = \"1GiB\"\nname = \"from-file\"\nscheduler = \"tcp://h:1\"\n\
             [security]\nca-file = \"ca.pem\"\nrequire-encryption = true\n",
            path,
        )
        .unwrap();
        let env = |name: &str| match name {
            "KILN_WORKER_NTHREADS" => Some(OsString::from("3")),
            "KILN_WORKER_MEMORY_LIMIT" => Some(OsString::from("2GiB")),
            _ => None,
        };
        let layered = layer_with(Section::Worker, &worker_command(), &os(&["--nthreads", "4"]), &file, env).unwrap();
        assert_eq!(value(&layered, "worker.nthreads"), ("4", &Origin::Flag));
        assert_eq!(value(&layered, "worker.memory-limit"), ("2GiB", &Origin::Env("KILN_WORKER_MEMORY_LIMIT")));
        assert_eq!(value(&layered, "worker.name"), ("from-file", &Origin::File(path.to_path_buf())));
        assert_eq!(value(&layered, "worker.scheduler").0, "tcp://h:1");
        // Paths in the file are relative to its directory.
        assert_eq!(value(&layered, "security.ca-file").0, "/etc/kiln/ca.pem");
        assert_eq!(value(&layered, "security.require-encryption").0, "true");
        assert_eq!(value(&layered, "worker.port"), ("0", &Origin::Default));
        // What the worker is started with: the same, through the same parser.
        let matches = worker_command().try_get_matches_from(&layered.args).unwrap();
        let args = crate::WorkerArgs::from_arg_matches(&matches).unwrap();
        assert_eq!((args.nthreads, args.memory_limit.as_str()), (Some(4), "2GiB"));
        assert_eq!(args.scheduler.as_deref(), Some("tcp://h:1"));
        // A positional on the command line beats the file's.
        let layered = layer_with(Section::Worker, &worker_command(), &os(&["tls://x:2"]), &file, env).unwrap();
        assert_eq!(value(&layered, "worker.scheduler"), ("tls://x:2", &Origin::Flag));
    }

    use clap::FromArgMatches;

    #[test]
    fn a_client_reads_its_certificate_from_the_file_and_the_variables() {
        let dir = std::env::temp_dir().join(format!("kiln-client-config-{}", std::process::id()));
        let security = crate::Security::temporary().unwrap();
        let [_, cert, key] = security.write_pem_files(&dir, crate::TlsRole::Client).unwrap();
        let path = dir.join("kiln.toml");
        let name = |p: &Path| p.file_name().unwrap().to_string_lossy().into_owned();
        let (cert, key) = (name(&cert), name(&key));
        let text = format!(
            "[security]\nca-file = \"ca.pem\"\nrequire-encryption = true\n\
             [security.client]\ncert = \"{cert}\"\nkey = \"{key}\"\n"
        );
        let file = ConfigFile::parse(&text, &path).unwrap();
        let client = client_security_with(&file, |_| None).unwrap();
        assert!(client.has_certificate(crate::TlsRole::Client));
        assert!(client.require_encryption());
        // A variable beats the file, and a missing file is named.
        let err = client_security_with(&file, |name| (name == "KILN_TLS_CERT").then(|| "/nonexistent/c.pem".into()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("client security settings:") && err.contains("/nonexistent/c.pem"), "{err}");
        // No settings: plain TCP.
        let none = client_security_with(&ConfigFile::default(), |_| None).unwrap();
        assert!(!none.has_certificate(crate::TlsRole::Client));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let path = Path::new("/tmp/k.toml");
        let err = ConfigFile::parse("[worker]\nthreads = 2\n", path).unwrap_err().to_string();
        assert!(err.starts_with("unknown key `worker.threads` in config file /tmp/k.toml"), "{err}");
        let err = ConfigFile::parse("[security.worker]\ncertificate = \"x\"\n", path).unwrap_err().to_string();
        assert!(err.starts_with("unknown key `security.worker.certificate`"), "{err}");
        let err = ConfigFile::parse("[scheduelr]\nport = 1\n", path).unwrap_err().to_string();
        assert!(err.starts_with("unknown key `scheduelr`"), "{err}");
        assert!(ConfigFile::parse("[worker\n", path).unwrap_err().to_string().starts_with("config file /tmp/k.toml"));
        let file = ConfigFile::parse("[worker]\nno-nanny = \"yes\"\n", path).unwrap();
        let err = layer_with(Section::Worker, &worker_command(), &[], &file, |_| None).unwrap_err().to_string();
        assert_eq!(err, "worker.no-nanny in file /tmp/k.toml: expected true or false");
    }
}
