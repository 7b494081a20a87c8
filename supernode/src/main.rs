//! `metalvpc-supernode`: the membership and relay server of a metalvpc overlay.
//!
//! This file is the command line only; each command lives in its own module: `run` (the
//! daemon, over `common::daemon`), `check`, `status` (also `/status` and `/metrics`),
//! `enrolled`, `admin` (`admin genkey`, `admin pubkey`, `sign`).

mod admin;
mod check;
mod enrolled;
mod run;
mod status;

use check::check;
use status::{answer, status};

use clap::{Parser, Subcommand};
use metalvpc_common as common;
use std::path::PathBuf;

/// metalvpc supernode: admits the members of each community and connects them.
///
/// The supernode runs on one public address. It admits the edges listed in its community
/// files, tells them about each other, helps them connect directly (also through NAT), and
/// relays their packets when no direct path works. Packets stay end-to-end encrypted between
/// the edges: the supernode never sees plaintext. Edges keep their direct tunnels while it
/// restarts; run two for redundancy.
///
/// Setting up:
///   (umask 077; metalvpc-supernode genkey > /etc/metalvpc/supernode.key)
///   metalvpc-supernode pubkey < /etc/metalvpc/supernode.key   # every edge needs this
///   cp /etc/metalvpc/supernode.toml.example /etc/metalvpc/supernode.toml   # then fill it in
///   metalvpc-supernode check --config /etc/metalvpc/supernode.toml
///   systemctl enable --now metalvpc-supernode   # or: metalvpc-supernode run --config ...
///   metalvpc-supernode status --config /etc/metalvpc/supernode.toml
#[derive(Parser)]
#[command(
    name = "metalvpc-supernode",
    version,
    verbatim_doc_comment,
    after_long_help = SUPERNODE_MORE_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const SUPERNODE_MORE_HELP: &str = "\
Files:
  /etc/metalvpc/supernode.toml          listen address, key, communities and their members
  /etc/metalvpc/supernode.key           the supernode's private key, mode 600
  /etc/metalvpc/supernode.toml.example  a commented example to start from
  /run/metalvpc/supernode.sock          management socket: GET /status (JSON), GET /metrics
  metalvpc-supernode.service            the systemd unit

Ports: UDP and TCP on the `listen` port (7654 in the examples); open both in the firewall.

Signals:
  SIGHUP           re-read the community files: members added join, members removed are
                   cut off, nobody else notices (systemctl reload)
  SIGINT, SIGTERM  stop; edges keep their direct tunnels and re-register when it is back

Exit status: 0 on success; 1 on any error, with a message that names the file, the key and
the fix. Logs go to stderr (the journal under systemd); RUST_LOG=debug shows more.

Documentation: /usr/share/doc/metalvpc/ (install.md, configuration.md, nat-traversal.md).
See also: metalvpc-edge(1).";

#[derive(Subcommand)]
enum Cmd {
    /// Print a new private key (base64). Store it with mode 600.
    ///
    /// Example: (umask 077; metalvpc-supernode genkey > /etc/metalvpc/supernode.key)
    #[command(verbatim_doc_comment)]
    Genkey,
    /// Read a private key on stdin and print its public key.
    ///
    /// Every edge puts it in the public_key of its [[supernode]] table.
    /// Example: metalvpc-supernode pubkey < /etc/metalvpc/supernode.key
    #[command(verbatim_doc_comment)]
    Pubkey,
    /// Run the supernode.
    ///
    /// Binds UDP and TCP on `listen` and stays in the foreground, logging to stderr. Under
    /// systemd (metalvpc-supernode.service) it reports ready once its sockets are bound and
    /// pings the watchdog. SIGHUP re-reads the community files; SIGTERM stops it.
    #[command(verbatim_doc_comment)]
    Run {
        /// The supernode's TOML file (listen, private_key_file, [[community]] …).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file without starting; exits non-zero on any problem.
    ///
    /// Reads the file, its community_dir and the key exactly as `run` would (key file
    /// permissions, networks, duplicate addresses or keys) and prints a summary, or every
    /// problem found.
    #[command(verbatim_doc_comment)]
    Check {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Write a new administrator signing key (Ed25519, base64) to FILE with mode 600, or
    /// print it. Keep it off the supernodes: whoever holds it decides who is a member.
    AdminGenkey {
        /// Where to write it (refuses to overwrite); without it the key is printed.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the administrator public key (for `admin_key` in edge and supernode configs)
    /// of the private key in FILE, or on stdin.
    AdminPubkey {
        /// The administrator private key file (mode 600); stdin without it.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Sign a community's member list ([[node]] entries of a supernode config or a
    /// community file) with the administrator key, for `signed_membership`.
    Sign {
        /// The administrator private key file (mode 600).
        #[arg(long)]
        key: PathBuf,
        /// A supernode config or a community file holding the [[node]] entries.
        #[arg(long, short)]
        config: PathBuf,
        /// Which community of the config (needed when it has several).
        #[arg(long)]
        community: Option<String>,
        /// The list's version; must grow with every list signed (default: the Unix time).
        #[arg(long)]
        version: Option<u64>,
        /// Where to write (default: the community's `signed_membership` path).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List or revoke the servers that enrolled with a community's join secret.
    Enrolled {
        #[command(subcommand)]
        action: EnrolAction,
    },
    /// Show the running supernode's communities and members.
    ///
    /// Asks the daemon started with this config over its management socket. A table by
    /// default; --json prints the same data for scripts.
    #[command(verbatim_doc_comment)]
    Status {
        /// The config the daemon runs with (to find its management socket).
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the man pages (metalvpc-supernode.1, metalvpc-supernode-run.1, ...) into a directory.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum EnrolAction {
    /// List the servers that enrolled with a join secret, their addresses, and revoked keys.
    List {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Revoke an enrolled server: its address is freed, its key refused from now on, and the
    /// running supernode is told to reload (its sessions are torn down on every edge).
    Revoke {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
        /// The community it enrolled in.
        #[arg(long)]
        community: String,
        /// Its public key (base64).
        #[arg(long)]
        key: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Run { .. });
    common::daemon::main("metalvpc-supernode", daemon, || match cli.cmd {
        Cmd::Genkey => common::cmd_genkey(),
        Cmd::Pubkey => common::cmd_pubkey(),
        Cmd::Run { config } => run::run(config),
        Cmd::Check { config } => check(config),
        Cmd::Status { config, json } => status(config, json),
        Cmd::Enrolled { action } => enrolled::enrolled(action),
        Cmd::AdminGenkey { out } => admin::admin_genkey(out),
        Cmd::AdminPubkey { key } => admin::admin_pubkey(key),
        Cmd::Sign {
            key,
            config,
            community,
            version,
            out,
        } => admin::sign(&key, &config, community.as_deref(), version, out),
        Cmd::Man { dir } => common::write_man_pages(<Cli as clap::CommandFactory>::command(), &dir),
    });
}
