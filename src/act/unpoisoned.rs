//! Locks that outlive a panic.
//!
//! An action group runs on a task of its own, and a panic there is caught
//! and logged so that the pass goes on. A `std::sync::Mutex` held across
//! that panic is poisoned; `lock().expect(…)` would then panic in every
//! later pass. Every guarded value here is left consistent between
//! statements (a map entry inserted or removed whole), so the data of a
//! poisoned lock is as good as any.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, recovering it if a holder panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
