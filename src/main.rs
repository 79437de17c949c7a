use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use sf_cache::cli::{Cli, Command};
use sf_cache::commands::{self, exit, Context, Failure};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { exit::USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    sf_cache::ui::init_logging(cli.global.verbose, cli.global.quiet);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if !f.message.is_empty() {
                eprintln!("error: {}", f.message);
            }
            ExitCode::from(f.code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "sf-cache",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(());
        }
        _ => {}
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let Cli { global, command } = cli;
    let mut ctx = Context::new(global)?;
    match &command {
        Command::Install(a) => ctx.offline = a.offline,
        Command::Slurm(sf_cache::cli::SlurmCommand::Install(a)) => ctx.offline = a.offline,
        _ => {}
    }
    runtime.block_on(async {
        match &command {
            Command::List(a) => commands::list::run(&ctx, a).await,
            Command::Show(a) => commands::show::run(&ctx, a).await,
            Command::Keys(k) => commands::keys::run(&ctx, k).await,
            Command::Install(a) => commands::install::run(ctx, a).await,
            Command::Verify(a) => commands::lifecycle::verify(&ctx, a),
            Command::Uninstall(a) => commands::lifecycle::uninstall(&ctx, a),
            Command::Reindex(a) => commands::lifecycle::reindex(&ctx, a),
            Command::Sbom(a) => commands::sbom::run(&ctx, a).await,
            Command::Cache(c) => commands::lifecycle::cache(&ctx, c),
            Command::Mirror(a) => commands::mirror::run(&ctx, a).await,
            Command::Import(a) => commands::mirror::import(&ctx, a).await,
            Command::Publish(a) => commands::publish::run(&ctx, a).await,
            Command::UpdateIndex(a) => commands::publish::update_index(&ctx, a).await,
            Command::Slurm(c) => commands::slurm::run(&ctx, c).await,
            Command::Module(a) => commands::module::run(&ctx, a),
            Command::Relocate(a) => commands::relocate::run(&ctx, a),
            Command::Export(a) => commands::export::run(&ctx, a),
            Command::Build(a) => commands::build::run(&ctx, a).await,
            Command::Completions { .. } | Command::Man => Ok(()),
        }
    })
}
