//! The pieces of `status --json` both daemons share: what a daemon says about itself
//! ([`SelfReport`]: its key, cookie replies, drop counters by reason, the outcome of reloads)
//! and how it shows another node ([`NodeReport`]). Each daemon's report type (`EdgeReport`,
//! `SupernodeReport`) flattens them in; the JSON ([`to_json`]), the `status` table and
//! `/metrics` are all rendered from those types.

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

/// What a daemon reports about itself, in both reports (flattened into them).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SelfReport {
    pub cookie_replies: u64,
    /// Drops by reason (the edge's: those not attributable to one peer, plus the sum of the
    /// peers').
    pub drops: Drops,
    pub public_key: String,
    pub reloads: Reloads,
}

impl SelfReport {
    /// From the core's snapshot (`public_key`, `cookie_replies`, `drops`) and the shell's
    /// reload counts.
    pub fn new(
        public_key: &metalvpc_protocol::PublicKey,
        cookie_replies: u64,
        drops: &metalvpc_protocol::DropCounters,
        reloads: &crate::ReloadStats,
    ) -> SelfReport {
        SelfReport {
            cookie_replies,
            drops: Drops::from(drops),
            public_key: public_key.to_base64(),
            reloads: reloads.report(),
        }
    }
}

/// Another node as both reports show it (an edge's peer, a supernode's member; flattened
/// into those).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeReport {
    /// Its overlay address.
    pub address: String,
    pub name: String,
    pub public_key: String,
}

impl NodeReport {
    pub fn new(
        address: impl std::fmt::Display,
        name: &str,
        public_key: &metalvpc_protocol::PublicKey,
    ) -> NodeReport {
        NodeReport {
            address: address.to_string(),
            name: name.to_string(),
            public_key: public_key.to_base64(),
        }
    }

    /// How tables and metric labels name it: its name, or its key when it has none.
    pub fn label(&self) -> &str {
        if self.name.is_empty() {
            &self.public_key
        } else {
            &self.name
        }
    }
}

/// `status --json` (and `GET /status`): the report with the keys of every object in name
/// order, the order the JSON has always had, wherever a field is declared or flattened from
/// (serde_json's map is sorted: the workspace does not turn on `preserve_order`).
pub fn to_json<R: Serialize>(report: &R) -> serde_json::Result<String> {
    serde_json::to_value(report).and_then(|v| serde_json::to_string(&v))
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
            json.starts_with("{\"address_refused\":0,\"bad_cookie\":0,\"bad_version\":0,"),
            "{json}"
        );
        assert!(json.contains("\"replay\":1,"), "{json}");
        assert_eq!(drops.line(), "replay=1");
        assert_eq!(Drops::default().line(), "none");
        let back: Drops = serde_json::from_str(&json).unwrap();
        assert_eq!(back, drops);
    }
}
