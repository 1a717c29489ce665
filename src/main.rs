//! The `socket-hub` binary: flags, settings, logging, build, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use socket_hub::settings::Settings;
use socket_hub::startup::{Application, BuildError};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A WebSocket message hub: services identify with a token and route JSON
/// frames to everyone, a group, or one session.
#[derive(Parser)]
#[command(version, about)]
struct Flags {
    /// One more settings file, layered over settings/default.toml and
    /// settings/$HUB_ENV.toml (environment variables HUB__SECTION__KEY win).
    /// Given as HUB_CONFIG, it is also what `healthcheck` reads in a container.
    #[arg(long, value_name = "PATH", global = true, env = "HUB_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Exit 0 if the hub on this machine answers GET /healthz with 200
    /// (for container health checks; reads the port from the settings,
    /// HUB_CONFIG included).
    Healthcheck,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let settings = match Settings::load(flags.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("socket-hub: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Healthcheck) = flags.command {
        let url = format!("http://127.0.0.1:{}/healthz", settings.server.port);
        let status = actix_web::rt::System::new().block_on(socket_hub::client::http_status(&url));
        return match status {
            Ok(200) => ExitCode::SUCCESS,
            other => {
                eprintln!("socket-hub healthcheck: {url}: {other:?}");
                ExitCode::FAILURE
            }
        };
    }
    socket_hub::logging::init(settings.log.format);
    let result = actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        app.run_until_stopped().await.map_err(|e| BuildError::Bind {
            addr: "server".into(),
            source: e,
        })
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(BuildError::Settings(e)) => {
            eprintln!("socket-hub: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("socket-hub: {e}");
            ExitCode::FAILURE
        }
    }
}
