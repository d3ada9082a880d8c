//! The `portico` binary: parse the command line, then run or check.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use portico::settings::Settings;

/// jemalloc: the proxy path makes a few dozen small allocations per request (most of
/// them in Pingora), and glibc's malloc/free cost about twice as many instructions.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Portico: a programmable API gateway on Pingora.
#[derive(Parser, Debug)]
#[command(name = "portico", version, about)]
struct Cli {
    /// Static configuration file.
    #[arg(
        short = 'c',
        long = "conf",
        default_value = "conf/portico.yaml",
        global = true
    )]
    conf: PathBuf,
    /// Check the configuration (and the declarative resources it names), then exit.
    #[arg(short = 't', long = "test")]
    test: bool,
    /// Take over the listening sockets of a running portico (zero-downtime binary
    /// upgrade): start the new process with this flag, then send SIGQUIT to the old one.
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Read or repair the durable store in `data_dir` while portico is stopped.
    Store {
        #[command(subcommand)]
        action: StoreAction,
    },
}

#[derive(clap::Subcommand, Debug)]
enum StoreAction {
    /// Every stored key, with its indexes, or why it does not load.
    List,
    /// One stored record (`/apisix/routes/1`).
    Get { key: String },
    /// Remove one stored record.
    Delete { key: String },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.test {
        return check(&cli.conf);
    }
    let settings = match Settings::load(&cli.conf) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portico: {e}");
            return ExitCode::FAILURE;
        }
    };
    // After the settings: `log.json` chooses the error log's format, `log.level` its
    // filter.
    portico::logging::error_log::init(settings.log.json);
    if let Err(e) = portico::logging::filter::set_level(settings.log.level.as_deref()) {
        eprintln!("portico: log.level: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(Command::Store { action }) = &cli.command {
        let command = match action {
            StoreAction::List => portico::store_cli::StoreCommand::List,
            StoreAction::Get { key } => portico::store_cli::StoreCommand::Get(key.clone()),
            StoreAction::Delete { key } => portico::store_cli::StoreCommand::Delete(key.clone()),
        };
        return match portico::store_cli::run(&settings.data_dir, &command) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("portico: store: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match portico::server::run(settings, cli.upgrade, &cli.conf) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portico: cannot start: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `portico -t`, as `nginx -t`: every error of the file (and of the resources it names)
/// in one run, then `test is successful` or `test failed`.
fn check(conf: &std::path::Path) -> ExitCode {
    let shown = conf.display();
    let (settings, mut errors) = match std::fs::read_to_string(conf) {
        Ok(text) => portico::settings_check::parse_reporting_all(&text),
        Err(e) => {
            eprintln!("portico: cannot read {shown}: {e}");
            eprintln!("portico: configuration file {shown} test failed");
            return ExitCode::FAILURE;
        }
    };
    let syntax_ok = errors.is_empty();
    errors.extend(portico::server::check(&settings));
    if errors.is_empty() {
        println!(
            "portico: the configuration file {shown} syntax is ok\nportico: configuration file {shown} test is successful"
        );
        return ExitCode::SUCCESS;
    }
    if syntax_ok {
        eprintln!("portico: the configuration file {shown} syntax is ok");
    }
    for e in &errors {
        eprintln!("portico: {shown}: {e}");
    }
    eprintln!(
        "portico: configuration file {shown} test failed ({} errors)",
        errors.len()
    );
    ExitCode::FAILURE
}
