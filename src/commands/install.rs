//! `sf-cache install QUERY… --mirror M… --root DIR`: resolve, verify, fetch, unpack, relocate and
//! commit a closure; optionally a view and a lockfile.

use serde::Serialize;

use super::install_flow::{install, print_report_lines, InstallRequest, Installed};
use super::{CmdResult, Context};
use crate::cli::InstallArgs;
use crate::install::installer::InstallReport;

#[derive(Debug, Serialize)]
struct InstallOutput<'a> {
    root: String,
    #[serde(flatten)]
    report: &'a InstallReport,
    view: Option<String>,
}

pub async fn run(ctx: Context, args: &InstallArgs) -> CmdResult {
    match install(&ctx, &InstallRequest::from(args), None).await? {
        Some(done) => print_installed(&ctx, &done),
        None => Ok(()),
    }
}

fn print_installed(ctx: &Context, done: &Installed) -> CmdResult {
    if ctx.out.json {
        ctx.out.json(&InstallOutput {
            root: done.root.display().to_string(),
            report: &done.report,
            view: done.view.clone(),
        })?;
    } else if !ctx.global.quiet {
        print_report_lines(ctx, done)?;
    }
    Ok(())
}
