//! Test-only fault injection: the seam through which the crash tests steer a spawned `convcg`
//! into a crash, a full disk or an unwritable directory at a chosen, repeatable point.
//!
//! A [`FaultPlan`] is read from the `CONVCG_FAULT` environment variable by the command line
//! (library callers get [`FaultPlan::none`]). It is a comma-separated list of:
//!
//! | directive | effect |
//! |---|---|
//! | `hang_at_step=S` | after training step S (and its checkpoint, if one is due), print a marker line and block until killed or interrupted (Ctrl-C / SIGINT then checkpoints at S and stops) |
//! | `abort_at_step=S` | after training step S, abort the process (SIGABRT) |
//! | `hang_in_evaluation=1` | after training, once `model.ckpt` and `features.state` are written and before evaluation, print a marker and block forever |
//! | `hang_in_write=N:STAGE` | in the Nth checkpoint write of the process, print a marker and block forever after STAGE |
//! | `abort_in_write=N:STAGE` | the same, aborting instead |
//! | `disk_full_after=BYTES` | checkpoint writes fail with "no space left" once the process has written BYTES bytes through them |
//! | `unwritable_from=N` | the Nth and later checkpoint writes fail as if the directory were not writable |
//!
//! STAGE is one of `created` (temporary file created), `written` (bytes written), `synced`
//! (file fsynced) and `renamed` (renamed over the target, directory not yet synced). Markers
//! are lines on stderr starting with [`FAULT_MARKER`].

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// The environment variable the command line reads a [`FaultPlan`] from (tests only).
pub const FAULT_ENV: &str = "CONVCG_FAULT";

/// The start of every line the seam prints when it hangs, for tests to wait on.
pub const FAULT_MARKER: &str = "convcg-fault:";

/// A step of the checkpoint writer, after which a fault may strike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStage {
    /// The temporary file exists, empty.
    Created,
    /// The bytes are written to the temporary file.
    Written,
    /// The temporary file is fsynced.
    Synced,
    /// The temporary file is renamed over the target (the directory is not yet fsynced).
    Renamed,
}

impl WriteStage {
    fn parse(s: &str) -> Result<WriteStage> {
        Ok(match s {
            "created" => WriteStage::Created,
            "written" => WriteStage::Written,
            "synced" => WriteStage::Synced,
            "renamed" => WriteStage::Renamed,
            other => {
                bail!(
                    "unknown write stage `{other}` (expected created, written, synced or renamed)"
                )
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            WriteStage::Created => "created",
            WriteStage::Written => "written",
            WriteStage::Synced => "synced",
            WriteStage::Renamed => "renamed",
        }
    }
}

/// What a fault does when it strikes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultAction {
    /// Print a marker and block (until killed; at a training step, until interrupted).
    Hang,
    /// Abort the process at once.
    Abort,
}

/// Where and how a test wants the run to fail; [`FaultPlan::none`] (the default) never does.
/// Counters are atomic so that a plan can be shared with the worker threads' closures.
#[derive(Debug, Default)]
pub struct FaultPlan {
    at_step: Option<(u64, FaultAction)>,
    in_evaluation: bool,
    in_write: Option<(u64, WriteStage, FaultAction)>,
    disk_full_after: Option<u64>,
    unwritable_from: Option<u64>,
    writes: AtomicU64,
    bytes: AtomicU64,
}

impl FaultPlan {
    /// No faults.
    pub fn none() -> FaultPlan {
        FaultPlan::default()
    }

    /// The plan in [`FAULT_ENV`], or none if it is unset or empty.
    ///
    /// # Errors
    /// If the variable is set but not a valid plan (see [`FaultPlan::parse`]).
    pub fn from_env() -> Result<FaultPlan> {
        match std::env::var(FAULT_ENV) {
            Ok(text) => FaultPlan::parse(&text).with_context(|| format!("in {FAULT_ENV}")),
            Err(_) => Ok(FaultPlan::none()),
        }
    }

    /// Parses the directive list described in the module docs.
    ///
    /// # Errors
    /// On an unknown directive, a missing or malformed value, or a count of 0 (writes count
    /// from 1).
    pub fn parse(text: &str) -> Result<FaultPlan> {
        let mut plan = FaultPlan::none();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = item
                .split_once('=')
                .with_context(|| format!("`{item}` is not KEY=VALUE"))?;
            let number = |s: &str| -> Result<u64> {
                s.parse::<u64>()
                    .with_context(|| format!("`{item}`: `{s}` is not a whole number"))
            };
            let write_point = |action| -> Result<(u64, WriteStage, FaultAction)> {
                let (n, stage) = value
                    .split_once(':')
                    .with_context(|| format!("`{item}`: expected N:STAGE"))?;
                let n = number(n)?;
                if n == 0 {
                    bail!("`{item}`: checkpoint writes count from 1");
                }
                Ok((n, WriteStage::parse(stage)?, action))
            };
            match key {
                "hang_at_step" => plan.at_step = Some((number(value)?, FaultAction::Hang)),
                "abort_at_step" => plan.at_step = Some((number(value)?, FaultAction::Abort)),
                "hang_in_evaluation" => plan.in_evaluation = number(value)? > 0,
                "hang_in_write" => plan.in_write = Some(write_point(FaultAction::Hang)?),
                "abort_in_write" => plan.in_write = Some(write_point(FaultAction::Abort)?),
                "disk_full_after" => plan.disk_full_after = Some(number(value)?),
                "unwritable_from" => {
                    let n = number(value)?;
                    if n == 0 {
                        bail!("`{item}`: checkpoint writes count from 1");
                    }
                    plan.unwritable_from = Some(n);
                }
                other => bail!(
                    "unknown fault `{other}` (expected hang_at_step, abort_at_step, hang_in_evaluation, hang_in_write, abort_in_write, disk_full_after or unwritable_from)"
                ),
            }
        }
        Ok(plan)
    }

    /// Called after training step `step`: hangs or aborts if the plan says so. A hang ends
    /// when `stop` is set (an interrupt), so that the caller's interrupt handling runs at
    /// exactly this step.
    pub(crate) fn after_step(&self, step: u64, stop: Option<&AtomicBool>) {
        let Some((at, action)) = self.at_step else {
            return;
        };
        if at != step {
            return;
        }
        strike(action, &format!("at training step {step}"), || {
            stop.is_some_and(|s| s.load(Ordering::SeqCst))
        });
    }

    /// Called when training is done and its files are written, before evaluation: hangs if the
    /// plan says so.
    pub(crate) fn before_evaluation(&self) {
        if self.in_evaluation {
            strike(FaultAction::Hang, "before evaluation", || false);
        }
    }

    /// Starts a checkpoint write: its number (from 1), or the simulated error of an
    /// unwritable directory.
    pub(crate) fn begin_write(&self) -> io::Result<u64> {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.unwritable_from.is_some_and(|from| n >= from) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("Permission denied (simulated by {FAULT_ENV})"),
            ));
        }
        Ok(n)
    }

    /// Called after `stage` of checkpoint write `n`.
    pub(crate) fn after_stage(&self, n: u64, stage: WriteStage) {
        if let Some((at, s, action)) = self.in_write
            && at == n
            && s == stage
        {
            strike(
                action,
                &format!("in checkpoint write {n} after {}", stage.name()),
                || false,
            );
        }
    }

    /// Writes `bytes` to `out`, failing with "no space left" once the plan's byte budget is
    /// spent (the bytes that fit are written first, as a real full disk does).
    pub(crate) fn write_all(&self, out: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
        let Some(budget) = self.disk_full_after else {
            return out.write_all(bytes);
        };
        let used = self.bytes.load(Ordering::SeqCst);
        let room = usize::try_from(budget.saturating_sub(used)).unwrap_or(usize::MAX);
        let fits = room.min(bytes.len());
        out.write_all(&bytes[..fits])?;
        self.bytes.fetch_add(fits as u64, Ordering::SeqCst);
        if fits < bytes.len() {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!("No space left on device (simulated by {FAULT_ENV})"),
            ));
        }
        Ok(())
    }
}

/// Hangs (until `released` says so) or aborts, after printing a marker line.
fn strike(action: FaultAction, place: &str, released: impl Fn() -> bool) {
    let mut err = io::stderr().lock();
    match action {
        FaultAction::Abort => {
            let _ = writeln!(err, "{FAULT_MARKER} aborting {place}");
            let _ = err.flush();
            std::process::abort();
        }
        FaultAction::Hang => {
            let _ = writeln!(err, "{FAULT_MARKER} hanging {place}");
            let _ = err.flush();
            drop(err);
            while !released() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_directive_and_rejects_bad_ones() {
        let plan = FaultPlan::parse(
            "hang_in_write=2:written, disk_full_after=100,unwritable_from=3,abort_at_step=9",
        )
        .unwrap();
        assert_eq!(
            plan.in_write,
            Some((2, WriteStage::Written, FaultAction::Hang))
        );
        assert_eq!(plan.disk_full_after, Some(100));
        assert_eq!(plan.unwritable_from, Some(3));
        assert_eq!(plan.at_step, Some((9, FaultAction::Abort)));
        assert!(FaultPlan::parse("").unwrap().at_step.is_none());
        for bad in [
            "hang_at_step",
            "hang_at_step=x",
            "hang_in_write=2",
            "hang_in_write=0:written",
            "hang_in_write=1:flushed",
            "unwritable_from=0",
            "explode=1",
        ] {
            assert!(FaultPlan::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_byte_budget_writes_what_fits_then_fails_with_storage_full() {
        let plan = FaultPlan::parse("disk_full_after=5").unwrap();
        let mut out = Vec::new();
        plan.write_all(&mut out, b"abc").unwrap();
        let err = plan.write_all(&mut out, b"defg").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::StorageFull);
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn writes_from_the_nth_on_are_refused_as_unwritable() {
        let plan = FaultPlan::parse("unwritable_from=2").unwrap();
        assert_eq!(plan.begin_write().unwrap(), 1);
        let err = plan.begin_write().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(plan.begin_write().is_err());
    }
}
