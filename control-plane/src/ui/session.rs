//! Web UI sessions: a table in memory of random session ids (stored as their SHA-256) with
//! a CSRF token and an expiry each. A restart signs everyone out, which is the point: no
//! session outlives the process that checked the admin token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::store::random_hex;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "fulcrum_session";
/// How long a session lasts after sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept; the oldest goes when a sign-in would pass it.
const MAX_SESSIONS: usize = 1024;

/// What a request with a valid session carries.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every write must send in `x-csrf-token`.
    pub csrf: String,
}

/// A new session: the cookie value (shown to the browser once) and its CSRF token.
pub struct Created {
    pub id: String,
}

#[derive(Clone, Default)]
pub struct SessionTable {
    inner: Arc<Mutex<HashMap<[u8; 32], Entry>>>,
}

struct Entry {
    csrf: String,
    expires: Instant,
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl SessionTable {
    pub fn create(&self) -> Result<Created, String> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let now = Instant::now();
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        table.retain(|_, e| e.expires > now);
        if table.len() >= MAX_SESSIONS
            && let Some(oldest) = table.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| *k)
        {
            table.remove(&oldest);
        }
        table.insert(
            digest(&id),
            Entry {
                csrf,
                expires: now + SESSION_TTL,
            },
        );
        Ok(Created { id })
    }

    /// The live session with this id, if any.
    pub fn get(&self, id: &str) -> Option<Session> {
        let key = digest(id);
        let mut table = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = table.get(&key)?;
        if entry.expires <= Instant::now() {
            table.remove(&key);
            return None;
        }
        Some(Session {
            csrf: entry.csrf.clone(),
        })
    }

    pub fn remove(&self, id: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&digest(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_random_and_removable() {
        let table = SessionTable::default();
        let a = table.create().unwrap();
        let b = table.create().unwrap();
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 64);
        let sa = table.get(&a.id).unwrap();
        let sb = table.get(&b.id).unwrap();
        assert_ne!(sa.csrf, sb.csrf);
        assert!(table.get("nope").is_none());
        table.remove(&a.id);
        assert!(table.get(&a.id).is_none());
        assert!(table.get(&b.id).is_some());
    }

    #[test]
    fn expired_sessions_are_gone() {
        let table = SessionTable::default();
        let a = table.create().unwrap();
        table
            .inner
            .lock()
            .unwrap()
            .values_mut()
            .for_each(|e| e.expires = Instant::now() - Duration::from_secs(1));
        assert!(table.get(&a.id).is_none());
    }
}
