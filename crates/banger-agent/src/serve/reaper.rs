//! Child process bookkeeping, and reaping of orphans when the agent is PID 1.
//!
//! Every child the agent starts goes through [`spawn_tracked`], which records
//! its pid until [`untrack`] is called after the child was waited for. When
//! the agent is the init process of its PID namespace, orphaned processes are
//! re-parented to it and must be reaped, or they stay zombies. The reaper
//! thread started by [`start_orphan_reaper`] reaps every exited child that is
//! not tracked, and leaves tracked children to the thread that waits for them.

use std::collections::HashSet;
use std::io;
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;

/// Pids of the children that a thread of the agent waits for.
///
/// The lock is held while a child is spawned. `Command::spawn` waits for a
/// child whose `exec` failed, so the reaper must not reap a child before
/// `spawn` returned and the pid is recorded here.
static TRACKED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn tracked() -> MutexGuard<'static, Option<HashSet<i32>>> {
    TRACKED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Spawns `command` and records the child so the orphan reaper leaves it alone.
pub fn spawn_tracked(command: &mut Command) -> io::Result<Child> {
    let mut guard = tracked();
    let child = command.spawn()?;
    let pid = i32::try_from(child.id()).unwrap_or(i32::MAX);
    guard.get_or_insert_with(HashSet::new).insert(pid);
    Ok(child)
}

/// Forgets a child recorded by [`spawn_tracked`]; call it once the child was waited for.
pub fn untrack(pid: u32) {
    if let (Some(set), Ok(pid)) = (tracked().as_mut(), i32::try_from(pid)) {
        set.remove(&pid);
    }
}

/// Starts the thread that reaps orphans. Call it only when the agent is PID 1.
pub fn start_orphan_reaper() {
    let spawned = thread::Builder::new()
        .name("orphan-reaper".into())
        .spawn(reap_orphans_forever);
    if let Err(error) = spawned {
        log_line!("starting the orphan reaper thread failed: {error}; zombies will accumulate");
    }
}

fn reap_orphans_forever() -> ! {
    loop {
        // WNOWAIT leaves the child waitable: it is only reaped below once it
        // is known not to be tracked.
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
        match waitid(Id::All, flags) {
            Ok(status) => match status.pid() {
                Some(pid) => reap_if_untracked(pid),
                None => thread::sleep(Duration::from_millis(100)),
            },
            // No children at all: nothing can exit until one is spawned.
            Err(Errno::ECHILD) => thread::sleep(Duration::from_millis(500)),
            Err(Errno::EINTR) => {}
            Err(error) => {
                log_line!("orphan reaper: waitid failed: {error}");
                thread::sleep(Duration::from_secs(1));
            }
        }
    }
}

fn reap_if_untracked(pid: Pid) {
    let guard = tracked();
    let is_tracked = guard
        .as_ref()
        .is_some_and(|set| set.contains(&pid.as_raw()));
    if is_tracked {
        // Its own thread reaps it soon; check again after a short pause.
        drop(guard);
        thread::sleep(Duration::from_millis(20));
        return;
    }
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => {
            log_line!("reaped orphan process {pid} (exit code {code})")
        }
        Ok(WaitStatus::Signaled(_, signal, _)) => {
            log_line!("reaped orphan process {pid} (killed by {signal})");
        }
        Ok(_) => {}
        // `Command::spawn` already reaped a child whose exec failed.
        Err(Errno::ECHILD) => {}
        Err(error) => log_line!("reaping orphan process {pid} failed: {error}"),
    }
}
