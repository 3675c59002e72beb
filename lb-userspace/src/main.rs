//! `lbd`: the lb agent. See `lbd --help`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Kernel-accelerated layer-4 load balancer agent.
#[derive(Parser)]
#[command(name = "lbd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const DEFAULT_CONFIG: &str = "/etc/lb/lbd.toml";

#[derive(Subcommand)]
enum Command {
    /// Load and attach the XDP program and keep its maps in step with the config.
    Run {
        /// Config file.
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Which `[node.NAME]` of the config this machine is (default: the hostname).
        #[arg(long)]
        node: Option<String>,
    },
    /// Validate a config file and print every error with file, line and key.
    Check {
        /// Config file (also accepted as --config).
        file: Option<PathBuf>,
        #[arg(long = "config", conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// Validate the config and have the running agent re-read it (SIGHUP).
    Reload {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop forwarding: with --detach, remove the pinned XDP link and maps and
    /// undo the host settings lbd made. Without --detach there is nothing to do
    /// while no agent runs (the pinned program keeps forwarding by design).
    Stop {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        node: Option<String>,
        /// Remove the data path (pinned link and maps, host settings).
        #[arg(long)]
        detach: bool,
    },
    /// Act on one backend of the running agent.
    Backend {
        #[command(subcommand)]
        command: BackendCommand,
    },
    /// Print the argon2id hash of a password for `[[admin.user]] password_hash`
    /// (asked twice on a terminal, read as one line from a pipe).
    Passwd,
    /// Translate haproxy.cfg and each node's keepalived.conf into one lbd.toml.
    /// What has no lb equivalent is listed on stderr as file:line. Exit 0:
    /// complete; 3: written but incomplete; 1: nothing written.
    Import {
        /// The haproxy.cfg both nodes run.
        #[arg(long)]
        haproxy: PathBuf,
        /// NODE=keepalived.conf, once per node (the node becomes [node.NODE]).
        #[arg(long = "keepalived", value_name = "NODE=FILE", required = true,
              value_parser = lb_userspace::import::node_file)]
        keepalived: Vec<(String, PathBuf)>,
        /// Where to write lbd.toml (atomically); stdout if not given.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Print the running agent's picture: node, VRRP, and per service one
    /// row per backend (state, weight, flows, traffic). A table on a
    /// terminal, JSON when piped (scripts keep working); --table and --json
    /// choose.
    Status {
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        node: Option<String>,
        /// The full status as JSON, for scripts.
        #[arg(long, conflicts_with = "table")]
        json: bool,
        /// The table even when piped (`watch lbd status --table`, grep).
        #[arg(long)]
        table: bool,
    },
}

#[derive(Subcommand)]
enum BackendCommand {
    /// Set a backend's admin state: `ready`, `drain` (no new clients;
    /// persistent clients and established flows keep going) or `maint` (no
    /// new or persistent traffic, no health checks). Kept across reloads and
    /// restarts.
    SetState {
        /// SERVICE/BACKEND, e.g. horizon/cs1.
        target: String,
        /// ready, drain or maint.
        state: String,
        #[arg(long, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        #[arg(long)]
        node: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { file, config } => {
            let path = file
                .or(config)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
            lb_userspace::config::check_command(&path)
        }
        Command::Run { config, node } => {
            lb_userspace::logging::init();
            report(lb_userspace::agent::run(&config, node.as_deref()))
        }
        Command::Reload { config, node } => {
            report(lb_userspace::agent::reload(&config, node.as_deref()))
        }
        Command::Stop {
            config,
            node,
            detach,
        } => {
            lb_userspace::logging::init();
            report(lb_userspace::agent::stop(&config, node.as_deref(), detach))
        }
        Command::Backend {
            command:
                BackendCommand::SetState {
                    target,
                    state,
                    config,
                    node,
                },
        } => report(lb_userspace::control::client::set_state(
            &config,
            node.as_deref(),
            &target,
            &state,
        )),
        Command::Import {
            haproxy,
            keepalived,
            output,
        } => lb_userspace::import::command(&haproxy, &keepalived, output.as_deref()),
        Command::Passwd => report(lb_userspace::admin::passwd::command()),
        Command::Status {
            config,
            node,
            json,
            table,
        } => {
            use std::io::IsTerminal;
            let table = table || (!json && std::io::stdout().is_terminal());
            report(lb_userspace::control::client::status(
                &config,
                node.as_deref(),
                table,
            ))
        }
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lbd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
