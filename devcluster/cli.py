"""``cachewarden dev up | down | status | kubeconfig | build``: the local cluster from the shell.

``dev up`` starts the cluster and returns; its processes keep running (each in its own session)
until ``dev down`` stops exactly the pids recorded in the run directory's state file.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from devcluster import binaries
from devcluster.cluster import (
    DEFAULT_NODE_NAME,
    Cluster,
    ClusterError,
    cluster_status,
    default_run_dir,
    read_state,
    remove_run_dir,
    run_dir_lock,
    stop_cluster,
)
from devcluster.controlplane import ComponentStartError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3  # `dev status` when the cluster is not (fully) up, as `systemctl status` does


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build_parser() -> argparse.ArgumentParser:
    """The ``cachewarden dev`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="cachewarden dev",
        description="A real Kubernetes control plane plus a process kubelet on loopback "
        "(see docs/devcluster.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_dir(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sub.add_argument(
            "--dir", type=Path, default=None,
            help="run directory (default: $CACHEWARDEN_DEV_DIR or ~/.cache/cachewarden/dev)",
        )
        return sub

    up = with_dir(commands.add_parser("up", help="start the cluster (builds the binaries if needed)"))
    up.add_argument("--node-name", default=DEFAULT_NODE_NAME, help="name of the fake node")
    up.add_argument("--no-kubelet", action="store_true", help="control plane only, no node")
    up.add_argument("--fresh", action="store_true",
                    help="discard the previous cluster's contents (etcd data, PKI) first")
    up.add_argument("--no-build", action="store_true",
                    help="fail instead of building missing binaries")
    up.add_argument("--timeout-scale", type=float, default=1.0,
                    help="multiply every readiness timeout (slow machines)")
    up.add_argument("--no-demo", action="store_true",
                    help="cluster only: no CRDs, operator, Redis or quickstart policy (devcluster/demo.py)")
    node_help = ("process: the fast lane (control plane + process kubelet on loopback); kind: a real node "
                 "(kind on the node image built here, Docker needed; docs/devcluster.md)")
    up.add_argument("--node", choices=("process", "kind"), default="process", help=node_help)

    down = with_dir(commands.add_parser("down", help="stop the cluster's processes"))
    down.add_argument("--purge", action="store_true",
                      help="also delete the run directory (etcd data, PKI, logs)")
    down.add_argument("--node", choices=("process", "kind"), default="process", help=node_help)

    status = with_dir(commands.add_parser("status", help="say what runs (exit 3 if not up)"))
    status.add_argument("--json", action="store_true", help="machine-readable output")

    kubeconfig = with_dir(commands.add_parser("kubeconfig", help="print the admin kubeconfig's path"))
    kubeconfig.add_argument("--node", choices=("process", "kind"), default="process", help=node_help)
    commands.add_parser("build", help="build the binaries (skips those already at the pinned version)")
    return parser


def main(argv: Sequence[str]) -> int:
    """Run ``cachewarden dev ...`` and return the exit code."""
    args = build_parser().parse_args(list(argv))
    run_dir = (args.dir.expanduser().resolve() if getattr(args, "dir", None) else default_run_dir())
    try:
        if getattr(args, "node", "process") == "kind":
            return command_kind(args.command)
        if args.command == "up":
            return command_up(run_dir, args)
        if args.command == "down":
            return command_down(run_dir, purge=args.purge)
        if args.command == "status":
            return command_status(run_dir, as_json=args.json)
        if args.command == "kubeconfig":
            return command_kubeconfig(run_dir)
        if args.command == "build":
            return command_build()
    except (ClusterError, binaries.BinariesError, ComponentStartError) as exc:
        _err(f"cachewarden dev {args.command}: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        # Cluster.start stops whatever it had started before the interrupt reached us.
        _err(f"cachewarden dev {args.command}: interrupted")
        return 130
    raise AssertionError(f"unhandled command {args.command!r}")


def command_up(run_dir: Path, args: argparse.Namespace) -> int:
    """Start the cluster unless it is already up."""
    if args.timeout_scale <= 0:
        _err(f"--timeout-scale {args.timeout_scale} must be > 0 (e.g. 2 on a slow machine)")
        return EXIT_USAGE
    with run_dir_lock(run_dir):
        if read_state(run_dir) is not None:
            status = cluster_status(run_dir)
            if status.up:
                print(f"devcluster: already up in {run_dir}")
                print(f"kubeconfig: {status.state.kubeconfig if status.state else ''}")
                return EXIT_OK
            stopped = [name for name, alive in status.running.items() if not alive]
            _err(f"devcluster: the previous cluster in {run_dir} is partly down "
                 f"(not running: {', '.join(stopped) or 'none'}; {status.apiserver_detail}); "
                 "stopping what is left of it")
            stop_cluster(run_dir)
        if args.fresh:
            remove_run_dir(run_dir)
        began = time.monotonic()
        bin_dir = binaries.ensure_binaries(build=not args.no_build, progress=_err)
        build_seconds = time.monotonic() - began
        cluster = Cluster(
            run_dir,
            bin_dir=bin_dir,
            node_name=args.node_name,
            kubelet=False if args.no_kubelet else None,
            timeout_scale=args.timeout_scale,
        )
        if not cluster.with_kubelet and not args.no_kubelet:
            _err("devcluster: the process kubelet (devcluster.kubelet) is not installed; "
                 "starting the control plane only")
        _err(f"devcluster: starting in {run_dir} ...")
        cluster.start()
    what = f"node {cluster.node_name} Ready" if cluster.with_kubelet else "control plane ready"
    print(f"devcluster: up, {what} in {cluster.ready_seconds:.1f}s "
          f"({cluster.control_plane.timings.summary()})")
    if build_seconds > 5:
        print(f"devcluster: building binaries took {build_seconds:.0f}s")
    print(f"kubeconfig: {cluster.kubeconfig}")
    print(f"  export KUBECONFIG={cluster.kubeconfig}")
    print(f"  {bin_dir / 'kubectl'} get nodes")
    print(f"logs: {cluster.control_plane.log_dir}   stop: cachewarden dev down")
    if cluster.with_kubelet and not args.no_demo:
        from devcluster.demo import start_demo

        try:
            print(start_demo(cluster.kubeconfig, bin_dir, progress=_err), end="")
        except (RuntimeError, TimeoutError, OSError) as exc:
            _err(f"devcluster: the cluster is up but the demo failed: {exc}")
            return EXIT_FAILED
    return EXIT_OK


def command_kind(command: str) -> int:
    """``up``, ``down`` and ``kubeconfig`` of the real-node demo (a kind cluster)."""
    from devcluster.realnode import kinddemo
    from devcluster.realnode.docker import DockerError

    try:
        if command == "up":
            print(kinddemo.kind_up(progress=_err), end="")
        elif command == "down":
            kinddemo.kind_down(progress=_err)
        else:
            path = kinddemo.kubeconfig_path()
            if not path.is_file():
                _err(f"cachewarden dev kubeconfig: no kind cluster yet ({path}); start one with: "
                     "cachewarden dev up --node kind")
                return EXIT_FAILED
            print(path)
    except (DockerError, RuntimeError, TimeoutError, OSError) as exc:
        _err(f"cachewarden dev {command} --node kind: {exc}")
        return EXIT_FAILED
    return EXIT_OK


def command_down(run_dir: Path, purge: bool) -> int:
    """Stop exactly the recorded processes (and, with --purge, delete the run directory)."""
    with run_dir_lock(run_dir):
        state = read_state(run_dir)
        if state is None:
            print(f"devcluster: no cluster recorded in {run_dir}; nothing to stop")
        else:
            running = stop_cluster(run_dir)
            names = ", ".join(f"{r.name} (pid {r.pid})" for r in running) or "nothing was running"
            print(f"devcluster: stopped {names}")
        if purge:
            remove_run_dir(run_dir)
            print(f"devcluster: deleted {run_dir}")
    return EXIT_OK


def command_status(run_dir: Path, as_json: bool) -> int:
    """Report each recorded process, the API server's readiness and the node's."""
    status = cluster_status(run_dir)
    if as_json:
        print(json.dumps({
            "run_dir": str(run_dir),
            "up": status.up,
            "kubeconfig": status.state.kubeconfig if status.state else None,
            "processes": {
                p.name: {"pid": p.pid, "running": status.running[p.name], "log": p.log}
                for p in (status.state.processes if status.state else [])
            },
            "ports": status.state.ports if status.state else {},
            "apiserver_ready": status.apiserver_ready,
            "apiserver_detail": status.apiserver_detail,
            "node_ready": status.node_ready,
        }, indent=2))
        return EXIT_OK if status.up else EXIT_NOT_RUNNING
    if status.state is None:
        print(f"devcluster: not running (no cluster recorded in {run_dir})")
        return EXIT_NOT_RUNNING
    state = status.state
    print(f"devcluster: {'up' if status.up else 'NOT up'} ({run_dir}, phase {state.phase})")
    for record in state.processes:
        alive = "running" if status.running[record.name] else "NOT running"
        print(f"  {record.name:<24} pid {record.pid:<8} {alive:<12} log {record.log}")
    ready = "ready" if status.apiserver_ready else f"not ready: {status.apiserver_detail}"
    print(f"  kube-apiserver https://127.0.0.1:{state.ports.get('apiserver')}  /readyz {ready}")
    if status.node_ready is not None:
        print(f"  node {state.node_name}: {'Ready' if status.node_ready else 'NOT Ready'}")
    print(f"  kubeconfig {state.kubeconfig}")
    return EXIT_OK if status.up else EXIT_NOT_RUNNING


def command_kubeconfig(run_dir: Path) -> int:
    """Print the admin kubeconfig's path (for ``export KUBECONFIG=$(cachewarden dev kubeconfig)``)."""
    state = read_state(run_dir)
    if state is None or not Path(state.kubeconfig).is_file():
        _err(f"cachewarden dev kubeconfig: no cluster in {run_dir}; start one with: cachewarden dev up")
        return EXIT_FAILED
    print(state.kubeconfig)
    return EXIT_OK


def command_build() -> int:
    """Build (or confirm) every binary at its pinned version."""
    directory = binaries.ensure_binaries(progress=_err)
    print(f"devcluster: all binaries at their pinned versions in {directory}")
    return EXIT_OK
