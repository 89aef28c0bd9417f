//! Running the batch system's commands (and `ssh`): found on a given `PATH`, with their output
//! captured, and errors that name the command, its exit status and what it printed.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::JobQueueError;

/// Runs external commands found on one `PATH` (the process's, or one given: tests put fake
/// batch-system commands first on theirs).
#[derive(Debug, Clone)]
pub struct CommandRunner {
    path: OsString,
}

impl Default for CommandRunner {
    fn default() -> Self {
        CommandRunner::from_env()
    }
}

impl CommandRunner {
    /// Searches this process's `PATH`.
    pub fn from_env() -> CommandRunner {
        CommandRunner { path: std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()) }
    }

    /// Searches `path` (a `PATH`-style list), which the commands also get as their `PATH`.
    pub fn with_path(path: impl Into<OsString>) -> CommandRunner {
        CommandRunner { path: path.into() }
    }

    /// The `PATH` searched.
    pub fn path(&self) -> &OsString {
        &self.path
    }

    /// The executable file `program` names on the `PATH`.
    ///
    /// # Errors
    /// [`JobQueueError::CommandMissing`] when no directory of the `PATH` has it.
    pub fn resolve(&self, program: &str) -> Result<PathBuf, JobQueueError> {
        use std::os::unix::fs::PermissionsExt;
        if program.contains('/') {
            return Ok(PathBuf::from(program));
        }
        std::env::split_paths(&self.path)
            .map(|dir| dir.join(program))
            .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
            .ok_or_else(|| JobQueueError::CommandMissing {
                command: program.to_string(),
                path: self.path.to_string_lossy().into_owned(),
            })
    }

    /// A [`Command`] for `program`, resolved on the `PATH`, which it also gets.
    ///
    /// # Errors
    /// As [`CommandRunner::resolve`].
    pub fn command(&self, program: &str) -> Result<Command, JobQueueError> {
        let mut command = Command::new(self.resolve(program)?);
        command.env("PATH", &self.path);
        Ok(command)
    }

    /// Runs `program args...` (with `stdin` on its standard input) and returns its standard
    /// output.
    ///
    /// # Errors
    /// [`JobQueueError::CommandMissing`], or [`JobQueueError::CommandFailed`] when it cannot
    /// start or exits with an error (with its exit status and standard error).
    pub fn run(&self, program: &str, args: &[String], stdin: Option<&[u8]>) -> Result<String, JobQueueError> {
        let shown = std::iter::once(program).chain(args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ");
        let failed =
            |status: String, stderr: String| JobQueueError::CommandFailed { command: shown.clone(), status, stderr };
        let mut command = self.command(program)?;
        command
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|e| failed("could not start".into(), e.to_string()))?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A command that exits without reading all of it reports its own error below.
            let _ = pipe.write_all(input);
        }
        let output = child.wait_with_output().map_err(|e| failed("could not be waited for".into(), e.to_string()))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
            let stderr = if stderr.is_empty() { stdout.trim().to_string() } else { stderr };
            return Err(failed(output.status.to_string(), stderr));
        }
        Ok(stdout)
    }
}
