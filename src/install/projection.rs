//! Where a package lands below an install root: a projection such as
//! `{name}-{version}-{hash}` or `{name}-{version}-{hash:7}`.

use thiserror::Error;

use crate::spec::Spec;

pub const DEFAULT_PROJECTION: &str = "{name}-{version}-{hash}";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProjectionError {
    #[error("projection `{projection}`: unknown field `{{{field}}}`; use name, version, hash, hash:N, namespace, platform, os, target, architecture")]
    UnknownField { projection: String, field: String },
    #[error("projection `{projection}`: {reason}")]
    Invalid { projection: String, reason: String },
}

/// A validated projection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    text: String,
}

impl Default for Projection {
    fn default() -> Self {
        Projection {
            text: DEFAULT_PROJECTION.to_string(),
        }
    }
}

impl Projection {
    pub fn parse(text: &str) -> Result<Projection, ProjectionError> {
        let invalid = |reason: &str| ProjectionError::Invalid {
            projection: text.to_string(),
            reason: reason.to_string(),
        };
        if text.is_empty() || text.starts_with('/') {
            return Err(invalid("must be a non-empty relative path"));
        }
        if text
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
        {
            return Err(invalid("must not contain empty, `.` or `..` components"));
        }
        if !text.contains("{hash") {
            return Err(invalid(
                "must contain {hash} (or {hash:N}) so different builds never collide",
            ));
        }
        let p = Projection {
            text: text.to_string(),
        };
        // Validate every field once with a dummy spec.
        p.render_with(|field| field_known(field).then(String::new).ok_or(()))
            .map_err(|field| ProjectionError::UnknownField {
                projection: text.to_string(),
                field,
            })?;
        Ok(p)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The relative path of `spec`'s prefix.
    pub fn render(&self, spec: &Spec) -> String {
        self.render_with(|field| Ok::<String, ()>(value(spec, field)))
            .unwrap_or_default()
    }

    fn render_with<E>(
        &self,
        mut value: impl FnMut(&str) -> Result<String, E>,
    ) -> Result<String, String> {
        let mut out = String::new();
        let mut rest = self.text.as_str();
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('}').ok_or_else(|| after.to_string())?;
            let field = &after[..end];
            let v = value(field).map_err(|_| field.to_string())?;
            out.push_str(&sanitize(&v));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

fn field_known(field: &str) -> bool {
    matches!(
        field,
        "name" | "version" | "hash" | "namespace" | "platform" | "os" | "target" | "architecture"
    ) || field
        .strip_prefix("hash:")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|n| (1..=32).contains(&n))
}

fn value(spec: &Spec, field: &str) -> String {
    let arch = spec.arch.as_ref();
    match field {
        "name" => spec.name.clone(),
        "version" => spec.version.clone(),
        "hash" => spec.hash.clone(),
        "namespace" => spec.namespace.clone().unwrap_or_default(),
        "platform" => arch.map(|a| a.platform.clone()).unwrap_or_default(),
        "os" => arch.map(|a| a.os.clone()).unwrap_or_default(),
        "target" => arch.map(|a| a.target.clone()).unwrap_or_default(),
        "architecture" => arch
            .map(|a| format!("{}-{}-{}", a.platform, a.os, a.target))
            .unwrap_or_default(),
        f => match f
            .strip_prefix("hash:")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => spec.hash.chars().take(n).collect(),
            None => String::new(),
        },
    }
}

/// Values never introduce path components.
fn sanitize(v: &str) -> String {
    v.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        serde_json::from_str(
            r#"{"name":"greet","version":"2.1.0","arch":{"platform":"linux","platform_os":"debian12","target":"x86_64"},
                "namespace":"sfdemo","hash":"pgvza7iamblnpepta3jh2thtyfktejqr"}"#,
        )
        .unwrap()
    }

    #[test]
    fn renders_default_and_short_hash() {
        let s = spec();
        assert_eq!(
            Projection::default().render(&s),
            "greet-2.1.0-pgvza7iamblnpepta3jh2thtyfktejqr"
        );
        let p = Projection::parse("{architecture}/{name}-{version}-{hash:7}").unwrap();
        assert_eq!(p.render(&s), "linux-debian12-x86_64/greet-2.1.0-pgvza7i");
    }

    #[test]
    fn rejects_bad_projections() {
        assert!(matches!(
            Projection::parse("{name}-{nope}-{hash}"),
            Err(ProjectionError::UnknownField { .. })
        ));
        assert!(Projection::parse("/abs/{hash}").is_err());
        assert!(Projection::parse("../{hash}").is_err());
        assert!(Projection::parse("{name}").is_err());
        assert!(Projection::parse("{hash:0}").is_err());
        assert!(Projection::parse("{hash").is_err());
    }
}
