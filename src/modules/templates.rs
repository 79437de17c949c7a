//! The module templates: embedded defaults (`templates/modules/`, compiled in) and an optional
//! override directory, rendered with minijinja (Jinja2 syntax).
//!
//! For a package named `N` the first of these is used: `<override>/N.lua.j2`, the embedded
//! `N.lua.j2` (only `slurm`), `<override>/generic.lua.j2`, the embedded `generic.lua.j2`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::{AutoEscape, Environment, UndefinedBehavior};

use super::{ModuleContext, ModulesError};

/// The templates compiled into the binary: `(file name, source)`.
pub const EMBEDDED: &[(&str, &str)] = &[
    (
        "generic.lua.j2",
        include_str!("../../templates/modules/generic.lua.j2"),
    ),
    (
        "slurm.lua.j2",
        include_str!("../../templates/modules/slurm.lua.j2"),
    ),
];

pub const GENERIC: &str = "generic.lua.j2";

/// A loaded set of templates.
pub struct Templates {
    env: Environment<'static>,
    /// Template names (`<origin>:<file>`) by file name, override first.
    overrides: BTreeMap<String, String>,
    override_dir: Option<PathBuf>,
}

/// A Lua string literal (double-quoted, escaped) for any text.
pub fn lua_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\{:03}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_keep_trailing_newline(true);
    env.add_filter("lua", |s: String| lua_quote(&s));
    env
}

fn template_error(name: &str, e: minijinja::Error) -> ModulesError {
    let mut reason = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        reason.push_str(&format!(": {s}"));
        src = s.source();
    }
    ModulesError::Template {
        name: name.to_string(),
        reason: reason.replace('\n', " "),
    }
}

impl Templates {
    /// The embedded templates, overridden file by file by `*.lua.j2` in `dir`. Every template is
    /// parsed here, so a broken one is reported before anything is written.
    pub fn load(dir: Option<&Path>) -> Result<Templates, ModulesError> {
        let mut env = environment();
        for (file, source) in EMBEDDED {
            let name = format!("builtin:{file}");
            env.add_template_owned(name.clone(), *source)
                .map_err(|e| template_error(&name, e))?;
        }
        let mut overrides = BTreeMap::new();
        if let Some(dir) = dir {
            let err = |source| ModulesError::TemplateDir {
                dir: dir.to_path_buf(),
                source,
            };
            let rd = std::fs::read_dir(dir).map_err(err)?;
            for e in rd {
                let e = e.map_err(err)?;
                let file = e.file_name().to_string_lossy().into_owned();
                if !file.ends_with(".lua.j2") {
                    continue;
                }
                let path = e.path();
                let source =
                    std::fs::read_to_string(&path).map_err(|source| ModulesError::TemplateDir {
                        dir: path.clone(),
                        source,
                    })?;
                let name = path.display().to_string();
                env.add_template_owned(name.clone(), source)
                    .map_err(|e| template_error(&name, e))?;
                overrides.insert(file, name);
            }
        }
        Ok(Templates {
            env,
            overrides,
            override_dir: dir.map(Path::to_path_buf),
        })
    }

    /// The template (its registered name and file name) for a package.
    pub fn choose(&self, package: &str) -> (String, String) {
        let own = format!("{package}.lua.j2");
        if let Some(n) = self.overrides.get(&own) {
            return (n.clone(), own);
        }
        if EMBEDDED.iter().any(|(f, _)| *f == own) && own != GENERIC {
            return (format!("builtin:{own}"), own);
        }
        if let Some(n) = self.overrides.get(GENERIC) {
            return (n.clone(), GENERIC.to_string());
        }
        (format!("builtin:{GENERIC}"), GENERIC.to_string())
    }

    /// Render the module text for `ctx` (its `template` field is filled in).
    pub fn render(&self, ctx: &mut ModuleContext) -> Result<String, ModulesError> {
        let (name, file) = self.choose(&ctx.name);
        ctx.template = match (&self.override_dir, name.starts_with("builtin:")) {
            (Some(_), false) => name.clone(),
            _ => format!("templates/modules/{file} (built in)"),
        };
        let t = self
            .env
            .get_template(&name)
            .map_err(|e| template_error(&name, e))?;
        t.render(&*ctx).map_err(|e| template_error(&name, e))
    }
}
