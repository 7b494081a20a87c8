//! `metalvpc-supernode`: the membership and relay server of a metalvpc overlay.
//!
//! This file is the command line only; each command lives in its own module: `run` (the
//! daemon, over `common::daemon`), `check`, `status` (also `/status` and `/metrics`),
//! `enrolled`, `admin` (`admin genkey`, `admin pubkey`, `sign`).

mod admin;
mod check;
mod enrolled;
mod enrolled_token;
mod run;
mod signal;
mod status;

use check::check;
use status::{answer, status};

use clap::{CommandFactory, Parser, Subcommand};
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
///   chown metalvpc:metalvpc /etc/metalvpc/supernode.key   # the unit runs as user metalvpc
///   metalvpc-supernode pubkey < /etc/metalvpc/supernode.key   # every edge needs this
///   cp /etc/metalvpc/supernode.toml.example /etc/metalvpc/supernode.toml   # then fill it in
///   metalvpc-supernode admin-genkey --out /root/metalvpc-admin.key   # once: its admin_key
///   metalvpc-supernode sign --key /root/metalvpc-admin.key --config /etc/metalvpc/supernode.toml
///   metalvpc-supernode check --config /etc/metalvpc/supernode.toml
///   systemctl enable --now metalvpc-supernode   # or: metalvpc-supernode run --config ...
///   metalvpc-supernode status --config /etc/metalvpc/supernode.toml
#[derive(Parser)]
#[command(name = "metalvpc-supernode", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The end of `--help` (and the man page), before what both binaries say there.
const SUPERNODE_MORE_HELP: &str = "\
Files:
  /etc/metalvpc/supernode.toml          listen address, key, communities and their members
  /etc/metalvpc/supernode.key           the supernode's private key, mode 600, user metalvpc's
  /etc/metalvpc/supernode.toml.example  a commented example to start from
  /run/metalvpc/supernode.sock          management socket: GET /status (JSON), GET /metrics
  metalvpc-supernode.service            the systemd unit

Ports: UDP and TCP on the `listen` port (7654 in the examples); open both in the firewall.

Signals:
  SIGHUP           re-read the community files: members added join, members removed are
                   cut off, nobody else notices (systemctl reload)
  SIGINT, SIGTERM  stop; edges keep their direct tunnels and re-register when it is back";

#[derive(Subcommand)]
enum Cmd {
    /// genkey, pubkey, run, check, status, man (their help: help.txt).
    #[command(flatten)]
    Shared(common::cli::Shared),
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
    /// Enrolment: tokens for new servers, the servers that enrolled, revoking one.
    Enrolled {
        #[command(subcommand)]
        action: EnrolAction,
    },
}

#[derive(Subcommand)]
enum EnrolAction {
    /// List the servers that enrolled, their addresses, tokens, revoked keys and quarantined
    /// addresses.
    List {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Revoke an enrolled server: its key is refused from now on, the token it enrolled with is
    /// burned, its address is quarantined (not handed out again until released), and the
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
        /// Also write a new shared join secret to the community's `join_secret_file` (the
        /// revoked server holds the old one; servers that have yet to enrol need the new one).
        #[arg(long)]
        rotate_secret: bool,
    },
    /// Hand a quarantined address (of a revoked server) out again.
    Release {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
        /// The community.
        #[arg(long)]
        community: String,
        /// The quarantined address.
        #[arg(long)]
        address: std::net::IpAddr,
    },
    /// Per-server enrolment tokens (as `kubeadm token`): create, list, delete.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Create a token and print it (`<id>.<secret>`): the new server's edge config takes it
    /// in `join_token_file`.
    Create {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
        /// The community it admits to (one with `address_pool`).
        #[arg(long)]
        community: String,
        /// How long it is valid: 30m, 24h, 7d; 0 never expires.
        #[arg(long, default_value = "24h")]
        ttl: String,
        /// How many servers may enrol with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// The address the server gets (inside the community's network) instead of the next
        /// free one of the pool.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
    },
    /// List the tokens: id, uses left, expiry, address.
    List {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Delete a token (servers that enrolled with it stay).
    Delete {
        /// The supernode's TOML file.
        #[arg(long, short)]
        config: PathBuf,
        /// The community.
        #[arg(long)]
        community: String,
        /// The token's id (the part before the dot).
        id: String,
    },
}

fn main() {
    let cli: Cli = common::cli::parse(command());
    let daemon = matches!(&cli.cmd, Cmd::Shared(c) if c.is_daemon());
    common::daemon::main("metalvpc-supernode", daemon, || match cli.cmd {
        Cmd::Shared(c) => c.execute(command, run::run, check, status),
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
    });
}

/// The command line: the clap definition with the help of the shared commands (help.txt);
/// `status` is listed after the supernode's own commands, as it always was.
fn command() -> clap::Command {
    let cmd = common::cli::with_help(Cli::command(), include_str!("help.txt")).after_long_help(
        common::cli::more_help(SUPERNODE_MORE_HELP, "metalvpc-edge(1)"),
    );
    let last = cmd.get_subcommands().map(|c| c.get_display_order()).max();
    cmd.mut_subcommand("status", |c| c.display_order(last.unwrap_or(0) + 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn supernode_help_stays_as_testdata_has_it() {
        metalvpc_common::testing::assert_help_unchanged(
            super::command(),
            env!("CARGO_MANIFEST_DIR"),
        );
    }
}
