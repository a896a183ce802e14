//! The layout version of the data under a key prefix, checked by every service at start.
//!
//! `<p>:layout` holds the version (a decimal string) of the layout in [`crate::schema`] that
//! wrote the data. [`Broker::check_layout`] reads it: absent — a fresh deployment, or one from
//! before versioning, whose layout is version 1 — it is written; the version this code knows is
//! fine; an older one is migrated step by step (`migrate`) and the new version written; a newer
//! one (written by a newer eventflow) refuses: this code would misread or damage its data.

use crate::{Broker, BrokerError, Result, schema::LAYOUT_VERSION};

/// What [`Broker::check_layout`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayoutCheck {
    /// The stored version is the one this code writes.
    Current,
    /// No version was stored (a fresh or pre-versioning deployment); the current one is now.
    Written,
    /// The data was migrated from the stored (older) version to the current one.
    Migrated(u32),
    /// The data was written by a newer layout: this code must not touch it.
    Newer(u32),
}

impl Broker {
    /// Reads the layout version under the prefix, writing or migrating it as the module doc
    /// says. Fails if Redis cannot be reached, or the stored value is not a version.
    pub async fn check_layout(&self) -> Result<LayoutCheck> {
        let key = self.keys().layout();
        let mut conn = self.conn().await?;
        // SET NX, then GET: of several services starting at once, one writes and all read the
        // same value (SET NX GET would need Redis 7).
        let (written, stored): (Option<String>, String) =
            redis::pipe().cmd("SET").arg(&key).arg(LAYOUT_VERSION).arg("NX").get(&key).query_async(&mut conn).await?;
        if written.is_some() {
            return Ok(LayoutCheck::Written);
        }
        let version: u32 = stored
            .trim()
            .parse()
            .map_err(|_| BrokerError::Internal(format!("{key} holds {stored:?}, not a layout version")))?;
        if version == LAYOUT_VERSION {
            return Ok(LayoutCheck::Current);
        }
        if version > LAYOUT_VERSION {
            return Ok(LayoutCheck::Newer(version));
        }
        let mut at = version;
        while at < LAYOUT_VERSION {
            at = migrate(self, at).await?;
        }
        let _: () = redis::cmd("SET").arg(&key).arg(LAYOUT_VERSION).query_async(&mut conn).await?;
        Ok(LayoutCheck::Migrated(version))
    }
}

/// Migrates the data from layout `from` to the next version, which it returns. One arm per
/// version step.
///
/// 1 → 2 (dedup ids in time-bucket hashes instead of one key per event) rewrites nothing: a
/// stream created by layout 1 has no `dedup_legacy_until` meta field, and its first publish by
/// layout 2 sets it to one window later; until then PUBLISH also reads the layout-1 dedup keys,
/// which expire by themselves within that window. So several services starting at once, and
/// streams created by layout-1 replicas still running during a rolling upgrade, need no step here.
async fn migrate(_broker: &Broker, from: u32) -> Result<u32> {
    match from {
        1 => Ok(2),
        0 => Err(BrokerError::Internal("layout version 0 does not exist (the first layout is 1)".into())),
        other => Err(BrokerError::Internal(format!("no migration from layout version {other}"))),
    }
}
