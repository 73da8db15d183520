//! The `hotpage` binary: parses the command line and maps errors to exit codes
//! (0 ok, 1 runtime error, 2 usage error).

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = hotpage::cli::Cli::parse();
    hotpage::cli::init_logging(cli.verbose);
    match hotpage::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One line: the error and its causes, joined.
            eprintln!("hotpage: error: {err:#}");
            // A bad configuration file or recording is a usage error, like a bad flag.
            if err.downcast_ref::<hotpage::daemon::config::ConfigFileError>().is_some()
                || err.downcast_ref::<hotpage::cli::BadRecording>().is_some()
            {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
