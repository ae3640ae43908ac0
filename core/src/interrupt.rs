//! Ctrl-C and SIGTERM: the CLI's signal handler calls [`interrupt`]; long-running work (the
//! scheduler, `exec` commands) polls [`interrupted`] and stops, so temp files are removed by
//! their owners' `Drop`, children are killed and locks are released on the way out.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Records that the user asked to stop.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Whether the user asked to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
