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

use clap::{CommandFactory, Parser, Subcommand};
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
#[command(name = "metalvpc-edge", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The end of `--help` (and the man page), before what both binaries say there.
const EDGE_MORE_HELP: &str = "\
Files:
  /etc/metalvpc/<community>.toml   the config of one community
  /etc/metalvpc/<community>.key    this server's private key, mode 600
  /etc/metalvpc/edge.toml.example  a commented example to start from
  /run/metalvpc/<community>.sock   management socket: GET /status (JSON), GET /metrics
  metalvpc-edge@.service           the systemd unit; its instance is the community

Signals:
  SIGHUP           re-read the supernode list and keepalive (systemctl reload)
  SIGINT, SIGTERM  stop; the TAP device goes away with the process";

#[derive(Subcommand)]
enum Cmd {
    /// genkey, pubkey, run, check, status, man (their help: help.txt).
    #[command(flatten)]
    Shared(common::cli::Shared),
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

/// The command line: the clap definition with the help of the shared commands (help.txt).
fn command() -> clap::Command {
    common::cli::with_help(Cli::command(), include_str!("help.txt")).after_long_help(
        common::cli::more_help(EDGE_MORE_HELP, "metalvpc-supernode(1)"),
    )
}

fn main() {
    let cli: Cli = common::cli::parse(command());
    let daemon = matches!(&cli.cmd, Cmd::Shared(c) if c.is_daemon());
    common::daemon::main("metalvpc-edge", daemon, || match cli.cmd {
        Cmd::Shared(c) => c.execute(command, run::run, check, status),
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

#[cfg(test)]
mod tests {
    #[test]
    fn edge_help_stays_as_testdata_has_it() {
        metalvpc_common::testing::assert_help_unchanged(
            super::command(),
            env!("CARGO_MANIFEST_DIR"),
        );
    }
}
