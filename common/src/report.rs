//! The pieces of `status --json` both daemons share: drop counters by reason and the outcome
//! of reloads. Each daemon's report type (`EdgeReport`, `SupernodeReport`) holds them; the
//! JSON, the `status` table and `/metrics` are all rendered from those types.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Drop counters by reason name, as `status --json` shows them: an object with every reason,
/// in name order (the order `/metrics` and the table use too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Drops(pub BTreeMap<String, u64>);

impl From<&metalvpc_protocol::DropCounters> for Drops {
    fn from(d: &metalvpc_protocol::DropCounters) -> Drops {
        Drops(d.iter().map(|(k, v)| (k.to_string(), v)).collect())
    }
}

impl Drops {
    /// Reason and count, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The non-zero counters as `name=count …`, or `none` (the table's `drops:` line).
    pub fn line(&self) -> String {
        let parts: Vec<String> = self
            .iter()
            .filter(|(_, n)| *n != 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(" ")
        }
    }
}

/// Reloads on SIGHUP as `status --json` shows them (`reloads`). Fields in name order, as the
/// JSON has always had them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Reloads {
    /// Reloads refused because the config had an error.
    pub failed: u64,
    /// The last refusal's error, until a reload succeeds.
    pub last_error: Option<String>,
    /// Seconds since the last attempt.
    pub last_secs: Option<f64>,
    /// Reloads applied.
    pub ok: u64,
}

/// How tables and metric labels name a peer or member: its name, or its key when it has none.
pub fn name_or_key<'a>(name: &'a str, public_key: &'a str) -> &'a str {
    if name.is_empty() {
        public_key
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_serialize_as_an_object_in_name_order() {
        let mut d = metalvpc_protocol::DropCounters::default();
        d.add(metalvpc_protocol::DropReason::Replay);
        let drops = Drops::from(&d);
        let json = serde_json::to_string(&drops).unwrap();
        assert!(
            json.starts_with("{\"bad_cookie\":0,\"bad_version\":0,"),
            "{json}"
        );
        assert!(json.contains("\"replay\":1,"), "{json}");
        assert_eq!(drops.line(), "replay=1");
        assert_eq!(Drops::default().line(), "none");
        let back: Drops = serde_json::from_str(&json).unwrap();
        assert_eq!(back, drops);
    }
}
