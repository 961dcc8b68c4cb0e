//! Programs a provider runs for a job (espeak-ng, a worker's command): each started in a
//! process group of its own, so a cancel, or a run dropped before its program ended, kills the
//! program and everything it started.

use std::{io, process::ExitStatus};

use invokd_core::provider::ProviderError;
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// Why a program did not run to its end.
#[derive(Debug, thiserror::Error)]
pub enum Stopped {
    #[error("the run was stopped, and its program killed")]
    Cancelled,
    #[error("waiting for the program failed: {0}")]
    Wait(#[from] io::Error),
}

impl Stopped {
    /// The run's error: a cancel as the job's, a failed wait as one to try again.
    pub fn into_provider_error(self, program: &str) -> ProviderError {
        match self {
            Self::Cancelled => {
                ProviderError::permanent("client_cancelled", "the job was cancelled")
            }
            Self::Wait(e) => ProviderError::transient("internal_error", format!("{program}: {e}")),
        }
    }
}

/// A running program and its process group.
pub struct ProcessGroup {
    child: Child,
    /// The group's id (the program's pid), while the group may still hold processes.
    group: Option<Pid>,
}

impl ProcessGroup {
    /// Starts `cmd` as the leader of a new process group.
    pub fn spawn(mut cmd: Command) -> io::Result<Self> {
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn()?;
        let group = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        Ok(Self { child, group })
    }

    /// The program, for its pipes.
    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Waits for the program to exit, or kills its group when `cancel` fires first. Whatever it
    /// started and left behind is killed too, so nothing outlives the run (or holds its pipes
    /// open).
    pub async fn wait(&mut self, cancel: &CancellationToken) -> Result<ExitStatus, Stopped> {
        let status = tokio::select! {
            status = self.child.wait() => status,
            () = cancel.cancelled() => {
                self.kill();
                let _ = self.child.wait().await;
                return Err(Stopped::Cancelled);
            }
        };
        self.kill();
        Ok(status?)
    }

    /// Kills every process of the group; a group already gone is no error.
    fn kill(&mut self) {
        if let Some(group) = self.group.take() {
            let _ = killpg(group, Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    #[tokio::test]
    async fn a_cancel_kills_the_program_and_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        let mut cmd = Command::new("sh");
        // A grandchild that would outlive a kill of the shell alone.
        cmd.arg("-c")
            .arg(format!("sleep 30 & echo $! > {}; wait", marker.display()));
        let mut group = ProcessGroup::spawn(cmd).unwrap();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            stop.cancel();
        });
        let started = Instant::now();
        assert!(matches!(group.wait(&cancel).await, Err(Stopped::Cancelled)));
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild is gone (or a zombie waiting for init) within a few seconds.
        let gone = (0..50).any(|_| {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let dead = state.is_empty() || state.split_whitespace().nth(2) == Some("Z");
            if !dead {
                std::thread::sleep(Duration::from_millis(100));
            }
            dead
        });
        assert!(gone, "the grandchild {pid} survived the cancel");
    }

    #[tokio::test]
    async fn a_program_that_ends_gives_its_status() {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("exit 3");
        let mut group = ProcessGroup::spawn(cmd).unwrap();
        let status = group.wait(&CancellationToken::new()).await.unwrap();
        assert_eq!(status.code(), Some(3));
    }
}
