//! Reference solution of exercise 3. Learners edit `starter.rs`, not this file.

use super::{Claim, IdempotencyStore};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct MemoryStore {
    /// Key → saved response (`None` while the first request is still working).
    /// A std Mutex: the critical section is a map lookup and never blocks on I/O.
    entries: Mutex<HashMap<String, Option<String>>>,
}

impl IdempotencyStore for MemoryStore {
    fn new() -> Self {
        MemoryStore::default()
    }

    fn begin(&self, key: &str) -> Claim {
        // One lock for the lookup *and* the insert: nobody can slip in between.
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        match entries.entry(key.to_string()) {
            Entry::Vacant(slot) => {
                slot.insert(None);
                Claim::Started
            }
            Entry::Occupied(entry) => match entry.get() {
                Some(response) => Claim::Done(response.clone()),
                None => Claim::InProgress,
            },
        }
    }

    fn complete(&self, key: &str, response: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), Some(response.to_string()));
    }
}
