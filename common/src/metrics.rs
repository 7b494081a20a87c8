//! Prometheus text exposition (format 0.0.4), written by hand: a few families, no registry.

use crate::report::{Drops, Reloads, SelfReport};
use std::fmt::Write;

/// Builds one `/metrics` page. Families are declared once; samples follow their family.
#[derive(Default)]
pub struct Metrics {
    out: String,
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Starts a family: `kind` is "counter" or "gauge".
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the family just declared.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// Drop counters by reason (the `drops` of `status --json`).
    pub fn drops(&mut self, name: &str, help: &str, drops: &Drops) -> &mut Self {
        self.family(name, "counter", help);
        for (reason, n) in drops.iter() {
            self.sample(name, &[("reason", reason)], n as f64);
        }
        self
    }

    /// Reload outcomes (the `reloads` of `status --json`).
    pub fn reloads(&mut self, prefix: &str, reloads: &Reloads) -> &mut Self {
        let name = format!("{prefix}_reloads_total");
        self.family(&name, "counter", "Reloads on SIGHUP by result.");
        self.sample(&name, &[("result", "ok")], reloads.ok as f64)
            .sample(&name, &[("result", "failed")], reloads.failed as f64)
    }

    /// The families of what every daemon reports about itself: `<prefix>_drops_total` by
    /// reason (`drops_help` says what it counts) and `<prefix>_reloads_total` by result.
    pub fn self_report(&mut self, prefix: &str, drops_help: &str, r: &SelfReport) -> &mut Self {
        self.drops(&format!("{prefix}_drops_total"), drops_help, &r.drops)
            .reloads(prefix, &r.reloads)
    }

    /// The page.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let mut m = Metrics::default();
        m.family("x_total", "counter", "Things.")
            .sample("x_total", &[("peer", "a\"b"), ("path", "direct")], 3.0)
            .single("y", "gauge", "Y.", 0.5)
            .drops(
                "d_total",
                "Drops.",
                &Drops([("replay".to_string(), 2), ("malformed".to_string(), 0)].into()),
            );
        let t = m.finish();
        assert!(t.contains("# TYPE x_total counter\n"));
        assert!(t.contains("x_total{peer=\"a\\\"b\",path=\"direct\"} 3\n"));
        assert!(t.contains("y 0.5\n"));
        assert!(t.contains("d_total{reason=\"replay\"} 2\n"));
    }
}
