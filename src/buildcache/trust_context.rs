//! The trust state used while reading mirrors: the keyring, the unsigned policy, and the rule that
//! a key a mirror publishes is trusted when its fingerprint is pinned.

use std::collections::HashSet;
use std::sync::{Mutex, RwLock};

use tracing::{debug, info};

use super::keys::mirror_keys;
use super::mirror::Mirror;
use super::BuildcacheError;
use crate::trust::{Keyring, SignatureStatus, Verification};

pub struct TrustContext {
    keyring: RwLock<Keyring>,
    /// `--allow-unsigned`: unsigned content is accepted from every mirror.
    pub allow_unsigned: bool,
    /// Mirrors whose published keys were already checked against the pins.
    pins_checked: Mutex<HashSet<String>>,
}

impl TrustContext {
    pub fn new(keyring: Keyring, allow_unsigned: bool) -> TrustContext {
        TrustContext {
            keyring: RwLock::new(keyring),
            allow_unsigned,
            pins_checked: Mutex::new(HashSet::new()),
        }
    }

    pub fn keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Verify clearsigned `text`. When the signer is unknown, the mirror's published keys whose
    /// fingerprints are pinned are added once, and the text is verified again.
    pub async fn verify(&self, mirror: &Mirror, text: &[u8]) -> Result<Verification, BuildcacheError> {
        let v = self.keyring().verify_cleartext(text);
        if v.status != SignatureStatus::UnknownKey || !self.has_pins() {
            return Ok(v);
        }
        let first_time = self
            .pins_checked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mirror.url.clone());
        if !first_time {
            return Ok(v);
        }
        debug!("signer unknown; checking {}'s published keys against the pins", mirror.url);
        let keys = match mirror_keys(mirror).await {
            Ok(k) => k,
            Err(e) => {
                debug!("could not read the keys of {}: {e}", mirror.url);
                return Ok(v);
            }
        };
        let mut added = 0;
        {
            let mut ring = self.keyring.write().unwrap_or_else(|e| e.into_inner());
            for key in keys {
                if let Ok(new) = ring.add_if_pinned(key.armored.as_bytes()) {
                    for k in &new {
                        info!("trusting pinned key {} published by {}", k.fingerprint, mirror.url);
                    }
                    added += new.len();
                }
            }
        }
        if added == 0 {
            return Ok(v);
        }
        Ok(self.keyring().verify_cleartext(text))
    }

    fn has_pins(&self) -> bool {
        !self.keyring().pins().is_empty()
    }
}
