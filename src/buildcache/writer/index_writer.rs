//! The package index a v3 buildcache publishes: `{"database":{"version":"8","installs":{…}}}`
//! (format reference §3.2, §10 G). Every node of every pushed DAG appears once, keyed by its DAG
//! hash; `in_buildcache` is true only for specs that have a spec manifest; `ref_count` is the
//! number of dependents (any dependency type) inside the index.

use serde_json::{Map, Value};

use super::WriterError;

/// Builds (or extends) an index.
#[derive(Debug, Clone, Default)]
pub struct IndexBuilder {
    /// hash → (node dict incl. `hash`, in_buildcache)
    installs: Map<String, Value>,
}

fn node_hash(node: &Value) -> Option<&str> {
    node.get("hash").and_then(Value::as_str)
}

impl IndexBuilder {
    pub fn new() -> IndexBuilder {
        IndexBuilder::default()
    }

    /// Start from an existing index text (DB version 8 only: older versions carry older node
    /// formats that must not be relabelled as version 8).
    pub fn from_existing(bytes: &[u8], what: &str) -> Result<IndexBuilder, WriterError> {
        let bad = |reason: String| WriterError::Malformed {
            what: what.to_string(),
            reason,
        };
        let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
        let db = v
            .get("database")
            .ok_or_else(|| bad("no `database` key".into()))?;
        let version = db.get("version").map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        if version.as_deref() != Some("8") {
            return Err(bad(format!(
                "index database version {} cannot be extended (only 8); rebuild the index from the manifests",
                version.unwrap_or_else(|| "missing".into())
            )));
        }
        let mut b = IndexBuilder::new();
        if let Some(installs) = db.get("installs").and_then(Value::as_object) {
            for (hash, rec) in installs {
                let Some(spec) = rec.get("spec") else {
                    return Err(bad(format!("record {hash} has no spec")));
                };
                let inbc = rec
                    .get("in_buildcache")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                b.insert_node(hash, spec.clone(), inbc);
            }
        }
        Ok(b)
    }

    fn insert_node(&mut self, hash: &str, node: Value, in_buildcache: bool) {
        match self.installs.get_mut(hash) {
            Some(rec) => {
                if in_buildcache {
                    rec["in_buildcache"] = Value::Bool(true);
                }
            }
            None => {
                let mut rec = Map::new();
                rec.insert("spec".into(), node);
                rec.insert("ref_count".into(), Value::from(0u64));
                rec.insert("in_buildcache".into(), Value::Bool(in_buildcache));
                self.installs.insert(hash.to_string(), Value::Object(rec));
            }
        }
    }

    /// Add every node of one spec file's DAG (`raw_nodes[0]` is the root, marked
    /// `in_buildcache = root_in_buildcache`; the others are added if missing). Nodes without a
    /// hash are ignored.
    pub fn add_dag(&mut self, raw_nodes: &[Value], root_in_buildcache: bool) {
        for (i, node) in raw_nodes.iter().enumerate() {
            if let Some(h) = node_hash(node) {
                let h = h.to_string();
                self.insert_node(&h, node.clone(), i == 0 && root_in_buildcache);
            }
        }
    }

    /// Set `in_buildcache` of an existing record.
    pub fn set_in_buildcache(&mut self, hash: &str, value: bool) {
        if let Some(rec) = self.installs.get_mut(hash) {
            rec["in_buildcache"] = Value::Bool(value);
        }
    }

    /// `(hash, name, version, in_buildcache)` of every record.
    pub fn records(&self) -> Vec<(String, String, String, bool)> {
        self.installs
            .iter()
            .map(|(h, r)| {
                let s = |k: &str| {
                    r["spec"]
                        .get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                (
                    h.clone(),
                    s("name"),
                    s("version"),
                    r["in_buildcache"].as_bool().unwrap_or(false),
                )
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.installs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.installs.is_empty()
    }

    /// Compact JSON of the database, with `ref_count` recomputed.
    pub fn to_json(&mut self) -> Vec<u8> {
        let mut counts: std::collections::HashMap<String, u64> = Default::default();
        for rec in self.installs.values() {
            if let Some(deps) = rec["spec"].get("dependencies").and_then(Value::as_array) {
                let mut seen = std::collections::HashSet::new();
                for d in deps {
                    if let Some(h) = d.get("hash").and_then(Value::as_str) {
                        if self.installs.contains_key(h) && seen.insert(h) {
                            *counts.entry(h.to_string()).or_default() += 1;
                        }
                    }
                }
            }
        }
        for (h, rec) in self.installs.iter_mut() {
            rec["ref_count"] = Value::from(counts.get(h).copied().unwrap_or(0));
        }
        let mut db = Map::new();
        db.insert("version".into(), Value::String("8".into()));
        db.insert("installs".into(), Value::Object(self.installs.clone()));
        let mut top = Map::new();
        top.insert("database".into(), Value::Object(db));
        serde_json::to_vec(&Value::Object(top)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dag_nodes_once_and_ref_counts() {
        let a = json!({"name":"a","version":"1","dependencies":[{"name":"c","hash":"c","parameters":{"deptypes":["build"],"virtuals":[]}}],"hash":"a"});
        let b = json!({"name":"b","version":"1","dependencies":[{"name":"a","hash":"a","parameters":{"deptypes":["link"],"virtuals":[]}},{"name":"c","hash":"c","parameters":{"deptypes":["build"],"virtuals":[]}}],"hash":"b"});
        let c = json!({"name":"c","version":"1","hash":"c"});
        let mut ib = IndexBuilder::new();
        ib.add_dag(&[b.clone(), a.clone(), c.clone()], true);
        ib.add_dag(&[a.clone(), c.clone()], true);
        let v: Value = serde_json::from_slice(&ib.to_json()).unwrap();
        let inst = &v["database"]["installs"];
        assert_eq!(v["database"]["version"], "8");
        assert_eq!(inst.as_object().unwrap().len(), 3);
        assert_eq!(inst["a"]["ref_count"], 1);
        assert_eq!(inst["c"]["ref_count"], 2);
        assert_eq!(inst["b"]["ref_count"], 0);
        assert_eq!(inst["a"]["in_buildcache"], true);
        assert_eq!(inst["c"]["in_buildcache"], false);
        // Merge: an existing index keeps its records.
        let mut ib2 = IndexBuilder::from_existing(&ib.to_json(), "t").unwrap();
        ib2.add_dag(&[json!({"name":"d","version":"2","hash":"d"})], true);
        assert_eq!(ib2.len(), 4);
        assert!(
            IndexBuilder::from_existing(br#"{"database":{"version":"7","installs":{}}}"#, "t")
                .is_err()
        );
        assert!(IndexBuilder::from_existing(b"[", "t").is_err());
    }
}
