//! Locks whose data stays consistent even if a holder panicked mid-update (counters, caches,
//! snapshots): a poisoned lock is taken anyway rather than spreading the panic.

use std::sync::{Mutex, MutexGuard, PoisonError};

pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
