//! Contention: a second process that keeps one core busy while a scenario runs
//! (`--contended`), to see what the server keeps up with when it does not have the machine
//! to itself.
//!
//! The bench binary is that process too: started as `eventide-bench burn-core SECONDS`, it
//! spins on one core until killed or until `SECONDS` have passed, so it never outlives a
//! bench that died without killing it.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

const BURN_COMMAND: &str = "burn-core";

/// Spins when the process was started as a burner (`burn-core` first), then says so.
pub fn burn_if_asked() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some(BURN_COMMAND) {
        return false;
    }
    let seconds = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(60);
    let until = Instant::now() + Duration::from_secs(seconds);
    let mut spins: u64 = 0;
    while Instant::now() < until {
        // Work the optimiser cannot drop, between clock reads.
        for _ in 0..100_000 {
            spins = std::hint::black_box(spins.wrapping_mul(6_364_136_223_846_793_005) + 1);
        }
    }
    true
}

/// A running burner, killed when dropped.
pub struct CoreBurner {
    child: Child,
}

impl CoreBurner {
    /// Starts a process that keeps one core busy for at most `limit`.
    pub fn start(limit: Duration) -> Result<CoreBurner> {
        let binary = std::env::current_exe().context("finding the bench binary")?;
        let child = Command::new(binary)
            .arg(BURN_COMMAND)
            .arg(limit.as_secs().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the process that burns a core")?;
        Ok(CoreBurner { child })
    }
}

impl Drop for CoreBurner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
