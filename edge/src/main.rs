//! `metalvpc-edge`: puts this server on a metalvpc overlay. It creates a TAP device with the
//! server's overlay address, registers with the supernode(s), and carries Ethernet frames to
//! the other members, end-to-end encrypted, directly when possible and relayed otherwise.
//!
//! This file is the command line only; each command lives in its own module: `run` (the
//! daemon, over `common::daemon`), `check`, `status` (also `/status` and `/metrics`),
//! `kubernetes`.

use metalvpc_edge::config;
mod check;
mod ipv6;
mod kubernetes;
mod mtu;
mod offload;
mod run;
mod status;
mod tap;

use check::check;
use mtu::auto_mtu;
use status::{answer, status, Info};

use clap::{Parser, Subcommand};
use metalvpc_common as common;
use std::path::PathBuf;

/// metalvpc edge: puts this server on an encrypted layer-2 overlay (one per community).
///
/// The edge creates a TAP device holding this server's overlay address, registers with the
/// supernode(s) named in its config, and carries Ethernet frames to the other members of the
/// community, end-to-end encrypted: directly when the underlay lets two servers reach each
/// other (also through NAT), relayed by a supernode otherwise. Kubernetes, etcd and anything
/// else then use the overlay address like a private LAN.
///
/// Setting up a server (the supernode's operator adds the public key to the community file):
///   (umask 077; metalvpc-edge genkey > /etc/metalvpc/prod.key)
///   metalvpc-edge pubkey < /etc/metalvpc/prod.key
///   cp /etc/metalvpc/edge.toml.example /etc/metalvpc/prod.toml   # then fill it in
///   metalvpc-edge check --config /etc/metalvpc/prod.toml
///   systemctl enable --now metalvpc-edge@prod     # or: metalvpc-edge run --config ...
///   metalvpc-edge status --config /etc/metalvpc/prod.toml
#[derive(Parser)]
#[command(
    name = "metalvpc-edge",
    version,
    verbatim_doc_comment,
    after_long_help = EDGE_MORE_HELP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

const EDGE_MORE_HELP: &str = "\
Files:
  /etc/metalvpc/<community>.toml   the config of one community
  /etc/metalvpc/<community>.key    this server's private key, mode 600
  /etc/metalvpc/edge.toml.example  a commented example to start from
  /run/metalvpc/<community>.sock   management socket: GET /status (JSON), GET /metrics
  metalvpc-edge@.service           the systemd unit; its instance is the community

Signals:
  SIGHUP           re-read the supernode list and keepalive (systemctl reload)
  SIGINT, SIGTERM  stop; the TAP device goes away with the process

Exit status: 0 on success; 1 on any error, with a message that names the file, the key and
the fix. Logs go to stderr (the journal under systemd); RUST_LOG=debug shows more.

Documentation: /usr/share/doc/metalvpc/ (install.md, configuration.md, nat-traversal.md).
See also: metalvpc-supernode(1).";

#[derive(Subcommand)]
enum Cmd {
    /// Print a new private key (base64). Store it with mode 600.
    ///
    /// Example: (umask 077; metalvpc-edge genkey > /etc/metalvpc/prod.key)
    #[command(verbatim_doc_comment)]
    Genkey,
    /// Read a private key on stdin and print its public key.
    ///
    /// Give the public key to the supernode's operator: it goes into a [[community.node]]
    /// table of the community file, next to this server's overlay address.
    /// Example: metalvpc-edge pubkey < /etc/metalvpc/prod.key
    #[command(verbatim_doc_comment)]
    Pubkey,
    /// Run the edge (needs root or CAP_NET_ADMIN to create the TAP device).
    ///
    /// Creates the TAP device, registers with the supernodes and stays in the foreground,
    /// logging to stderr. Under systemd (metalvpc-edge@<community>.service) it reports ready
    /// once the TAP device is up and a supernode accepted it, and pings the watchdog.
    /// SIGHUP re-reads the supernode list and keepalive; SIGTERM stops it.
    #[command(verbatim_doc_comment)]
    Run {
        /// The community's TOML file (community, private_key_file, [[supernode]], [interface]).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file without starting; exits non-zero on any problem.
    ///
    /// Reads the file and the key it names exactly as `run` would (key file permissions,
    /// addresses, MTU, supernode keys) and prints a one-line summary, or every problem found.
    #[command(verbatim_doc_comment)]
    Check {
        /// The community's TOML file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show the running edge's supernodes and peers (path, endpoint, traffic, drops).
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
    /// Write the man pages (metalvpc-edge.1, metalvpc-edge-run.1, ...) into a directory.
    #[command(hide = true)]
    Man {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print this node's Kubernetes settings for the overlay: kubelet --node-ip, kubeadm
    /// snippets, kube-proxy, Calico/Flannel/Cilium (MTU arithmetic shown), public ports to close.
    #[command(alias = "k8s")]
    Kubernetes {
        /// The community's TOML file.
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
        /// host:port of the cluster's API server (a VIP or the first control plane);
        /// default: this node's overlay address, port 6443.
        #[arg(long)]
        control_plane_endpoint: Option<String>,
        /// The cluster's pod network (kubeadm podSubnet).
        #[arg(long, default_value = "10.244.0.0/16")]
        pod_network: String,
        /// The cluster's service network (kubeadm serviceSubnet).
        #[arg(long, default_value = "10.96.0.0/12")]
        service_network: String,
        /// This node's own pod block (for Calico without encapsulation and allowed_cidrs).
        #[arg(long)]
        pod_cidr: Option<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let daemon = matches!(cli.cmd, Cmd::Run { .. });
    common::daemon::main("metalvpc-edge", daemon, || match cli.cmd {
        Cmd::Genkey => common::cmd_genkey(),
        Cmd::Pubkey => common::cmd_pubkey(),
        Cmd::Run { config } => run::run(config),
        Cmd::Check { config } => check(config),
        Cmd::Status { config, json } => status(config, json),
        Cmd::Man { dir } => common::write_man_pages(<Cli as clap::CommandFactory>::command(), &dir),
        Cmd::Kubernetes {
            config,
            json,
            control_plane_endpoint,
            pod_network,
            service_network,
            pod_cidr,
        } => kubernetes::cmd(
            &config,
            kubernetes::Args {
                json,
                control_plane_endpoint,
                pod_network,
                service_network,
                pod_cidr,
            },
        ),
    });
}
