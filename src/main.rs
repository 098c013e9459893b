//! Parse, load the configuration, run the command, map the outcome to an
//! exit code. No business logic here.

use std::process::ExitCode;

use boo_reconciler::cli::{Cli, LogFormat};
use boo_reconciler::commands;
use boo_reconciler::config::{Config, Sources};
use boo_reconciler::report::exit;

fn main() -> ExitCode {
    let cli = Cli::parse_all(std::env::args_os()).unwrap_or_else(|e| e.exit());
    init_logging(cli.global.log_format);
    boo_reconciler::failpoint::setup();

    let overrides = match cli.overrides() {
        Ok(o) => o,
        Err(e) => return usage(&e),
    };
    let sources = Sources {
        file: cli.global.config.clone(),
        env: Sources::process_env(),
        overrides,
    };
    let config = match Config::load(&sources) {
        Ok(c) => c,
        Err(e) => return usage(&e.to_string()),
    };
    for name in sources.unrecognized_env() {
        tracing::debug!(
            variable = name,
            "environment variable is not a setting; ignored"
        );
    }

    // The launcher becomes the agent: no runtime, no database.
    if let boo_reconciler::cli::Command::Launch {
        chat,
        session,
        agent,
        command,
    } = cli.command
    {
        let launch = boo_reconciler::launch::Launch {
            chat,
            session,
            agent,
            command,
        };
        return match boo_reconciler::launch::run(&config, &launch) {
            boo_reconciler::launch::Error::Usage(e) => usage(&e),
            boo_reconciler::launch::Error::Exec(e) => {
                eprintln!("error: {e}");
                ExitCode::from(127)
            }
        };
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let config_file = sources.file_in_use();
    match runtime.block_on(commands::dispatch(cli.command, config, config_file)) {
        Ok(code) => ExitCode::from(code),
        Err(commands::Error::Usage(e)) => usage(&e),
        Err(commands::Error::Runtime(e)) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::ERROR)
        }
    }
}

fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(exit::USAGE)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BOO_RECONCILER_LOG")
        // PostgreSQL's notices (a migration's `DROP … IF EXISTS` that
        // found nothing) are not news to an operator.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx::postgres::notice=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
