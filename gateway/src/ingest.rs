//! (being written: ingest helper) Agreed interface below; bodies to come.

use std::sync::Arc;

use crate::model::Snapshot;

/// The agents the gateway trusts (keys and scopes), replaced whenever the registry changes.
#[derive(Debug, Default)]
pub struct Trust {}

impl Trust {
    pub fn new() -> Trust {
        Trust {}
    }
    /// Replaces the trusted agents with those of `snapshot`. Returns one message per agent whose
    /// key cannot be parsed (that agent is then not trusted).
    pub fn replace(&self, snapshot: Arc<Snapshot>) -> Vec<String> {
        let _ = snapshot;
        Vec::new()
    }
}
