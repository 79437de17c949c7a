//! `sf-cache keys list|add|remove|trust-mirror`.

use serde::Serialize;

use super::{CmdResult, Context, Failure};
use crate::buildcache::keys::mirror_keys;
use crate::cli::KeysCommand;

#[derive(Debug, Serialize)]
struct KeyRow {
    fingerprint: String,
    user_ids: Vec<String>,
    /// `builtin`, `user` or `config`.
    source: String,
}

#[derive(Debug, Serialize)]
struct KeyList {
    keys: Vec<KeyRow>,
    pinned: Vec<String>,
}

pub async fn run(ctx: &Context, cmd: &KeysCommand) -> CmdResult {
    match cmd {
        KeysCommand::List => list(ctx),
        KeysCommand::Add { file } => {
            let added = ctx.user_keyring().add_file(file)?;
            if ctx.out.json {
                ctx.out.json(
                    &added
                        .iter()
                        .map(|k| KeyRow {
                            fingerprint: k.fingerprint.clone(),
                            user_ids: k.user_ids.clone(),
                            source: "user".into(),
                        })
                        .collect::<Vec<_>>(),
                )?;
            } else {
                for k in &added {
                    ctx.out.line(format!(
                        "trusted {} {}",
                        k.fingerprint,
                        k.user_ids.join(", ")
                    ))?;
                }
            }
            Ok(())
        }
        KeysCommand::Remove { fingerprint } => {
            let fpr = fingerprint.replace(' ', "").to_uppercase();
            if ctx.user_keyring().remove(&fpr)? {
                ctx.out.line(format!("removed {fpr}"))?;
                Ok(())
            } else {
                Err(Failure::new(
                    1,
                    format!("no user-added key {fpr}; `sf-cache keys list` shows the keys (builtin and config keys cannot be removed here)"),
                ))
            }
        }
        KeysCommand::TrustMirror { mirror, yes } => trust_mirror(ctx, mirror, *yes).await,
    }
}

fn list(ctx: &Context) -> CmdResult {
    let builtin = crate::trust::Keyring::builtin();
    let builtin_fprs: Vec<String> = builtin.keys().into_iter().map(|k| k.fingerprint).collect();
    let user_fprs: Vec<String> = ctx
        .user_keyring()
        .list()?
        .into_iter()
        .map(|k| k.fingerprint)
        .collect();
    let ring = ctx.keyring()?;
    let keys: Vec<KeyRow> = ring
        .keys()
        .into_iter()
        .map(|k| KeyRow {
            source: if builtin_fprs.contains(&k.fingerprint) {
                "builtin"
            } else if user_fprs.contains(&k.fingerprint) {
                "user"
            } else {
                "config"
            }
            .into(),
            fingerprint: k.fingerprint,
            user_ids: k.user_ids,
        })
        .collect();
    let mut pinned: Vec<String> = ring.pins().iter().map(|p| p.to_string()).collect();
    pinned.sort();
    let report = KeyList { keys, pinned };
    if ctx.out.json {
        ctx.out.json(&report)?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = report
        .keys
        .iter()
        .map(|k| {
            vec![
                k.fingerprint.clone(),
                k.source.clone(),
                k.user_ids.join(", "),
            ]
        })
        .collect();
    ctx.out
        .table(&["FINGERPRINT", "SOURCE", "USER IDS"], &rows)?;
    if !report.pinned.is_empty() {
        ctx.out
            .line("pinned (trusted when a mirror publishes them):")?;
        for p in &report.pinned {
            ctx.out.line(format!("  {p}"))?;
        }
    }
    Ok(())
}

async fn trust_mirror(ctx: &Context, name: &str, yes: bool) -> CmdResult {
    let mirror = ctx.open_mirror(name)?;
    let keys = mirror_keys(&mirror).await?;
    if keys.is_empty() {
        return Err(Failure::new(
            1,
            format!("{} publishes no keys (no v3/manifests/key/ and no build_cache/_pgp/); get the key from its publisher and run `sf-cache keys add FILE`", mirror.url),
        ));
    }
    let mut rows = Vec::new();
    for k in &keys {
        if yes {
            ctx.user_keyring()
                .add_bytes(k.armored.as_bytes(), &mirror.url)?;
        }
        rows.push(KeyRow {
            fingerprint: k.fingerprint.clone(),
            user_ids: k.user_ids.clone(),
            source: mirror.url.clone(),
        });
    }
    if ctx.out.json {
        #[derive(Serialize)]
        struct Report<'a> {
            mirror: &'a str,
            trusted: bool,
            keys: &'a [KeyRow],
        }
        ctx.out.json(&Report {
            mirror: &mirror.url,
            trusted: yes,
            keys: &rows,
        })?;
        return Ok(());
    }
    ctx.out
        .line(format!("{} publishes {} key(s):", mirror.url, rows.len()))?;
    for k in &rows {
        ctx.out
            .line(format!("  {}  {}", k.fingerprint, k.user_ids.join(", ")))?;
    }
    if yes {
        ctx.out.line("trusted.")?;
    } else {
        ctx.out.line(format!(
            "not trusted yet: check the fingerprints with the publisher, then run `sf-cache keys trust-mirror {name} --yes`"
        ))?;
    }
    Ok(())
}
