"""The kind node image, built on this machine: no registry, every binary from Debian or a Go module.

kind's own ``kind build node-image`` cannot run here: it fetches every image it did not build itself
(etcd, CoreDNS, pause, its CNI and storage images) with ``ctr content fetch`` from their registries.
So the node image is assembled the way kind assembles it, from parts made here:

1. ``cachewarden/kind-node-base``: Debian (mmdebstrap) with systemd, Debian's containerd, runc and CNI
   plugins, iptables/nftables; then ``node/Dockerfile`` adds our unit files, containerd configuration,
   CNI bridge configuration, ``runc-host-compat`` and the entrypoint (``node/files``).
2. One image per component, tagged with the name kubeadm asks for: kube-apiserver,
   kube-controller-manager, kube-scheduler, etcd, CoreDNS and pause on an empty root (static binaries),
   kube-proxy and kube-router on ``cachewarden/kind-netbase`` (they run iptables and ipset).
3. A build container of (1): kubeadm, kubelet and kubectl copied to ``/usr/bin``, ``/kind/version``
   written, every image of (2) imported into its containerd (pinned, so the kubelet never collects
   them), committed as ``cachewarden/kind-node:<kubernetes version>-<hash of every input>``.

etcd is ours at ``ETCD_VERSION`` (kubeadm would ask for its own default tag): :func:`kind_config`
tells kubeadm the tag, so the image says what it holds. The pure parts (component table, tags,
input hash) come first; the docker-driving functions after them.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from devcluster import binaries
from devcluster.realnode import docker
from devcluster.realnode.docker import DockerError
from devcluster.realnode.images import (
    DEFAULT_PATH,
    DEFAULT_SUITE,
    BuiltImage,
    RootfsRecipe,
    ensure_rootfs_image,
)

NODE_DIR = Path(__file__).resolve().parent / "node"
NODE_REPOSITORY = "cachewarden/kind-node"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10.2"  # containerd's sandbox_image in node/files/etc/containerd
NETPOL_IMAGE_REPOSITORY = "cachewarden.local/kube-router"
# Bump when the assembly below changes in a way its inputs do not show.
NODE_FORMAT = "1"

NODE_BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus",                                   # the node's init
    "containerd", "runc", "containernetworking-plugins",                 # the container runtime, CNI
    "iptables", "nftables", "ebtables", "conntrack", "iproute2", "ethtool", "kmod", "socat",  # kube-proxy
    "util-linux", "mount", "procps", "bash", "ca-certificates", "jq", "libseccomp2", "pigz",
)
NETBASE_PACKAGES = ("iptables", "nftables", "conntrack", "iproute2", "kmod", "ipset")


@dataclass(frozen=True)
class ComponentImage:
    """One image the node preloads: ``ref`` (the name kubeadm or a manifest asks for), made of ``binary``
    from the binary directory placed at ``path`` in an empty root or on the netbase image."""

    ref: str
    binary: str
    path: str
    on_netbase: bool = False
    entrypoint: tuple[str, ...] = ()


def etcd_image_tag(etcd_version: str) -> str:
    """kubeadm's tag form for etcd (``3.6.16-0``) of our ``ETCD_VERSION`` (``v3.6.16``)."""
    return f"{etcd_version.removeprefix('v')}-0"


def component_images(versions: Mapping[str, str]) -> tuple[ComponentImage, ...]:
    """Every image the node needs, from ``versions.env``'s values (KUBERNETES_VERSION, ETCD_VERSION,
    COREDNS_VERSION, KUBE_ROUTER_VERSION)."""
    k8s = versions["KUBERNETES_VERSION"]
    images = [
        ComponentImage(f"registry.k8s.io/{name}:{k8s}", name, f"/usr/local/bin/{name}")
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
    ]
    images += [
        ComponentImage(f"registry.k8s.io/kube-proxy:{k8s}", "kube-proxy", "/usr/local/bin/kube-proxy",
                       on_netbase=True, entrypoint=("/usr/local/bin/kube-proxy",)),
        ComponentImage(f"registry.k8s.io/etcd:{etcd_image_tag(versions['ETCD_VERSION'])}", "etcd",
                       "/usr/local/bin/etcd"),
        ComponentImage(f"registry.k8s.io/coredns/coredns:{versions['COREDNS_VERSION']}", "coredns",
                       "/coredns", entrypoint=("/coredns",)),
        ComponentImage(PAUSE_IMAGE, "pause", "/pause", entrypoint=("/pause",)),
        ComponentImage(f"{NETPOL_IMAGE_REPOSITORY}:{versions['KUBE_ROUTER_VERSION']}", "kube-router",
                       "/usr/local/bin/kube-router", on_netbase=True,
                       entrypoint=("/usr/local/bin/kube-router",)),
    ]
    return tuple(images)


NODE_BINARIES = ("kubeadm", "kubelet", "kubectl")
CNI_MANIFEST_PATH = "/kind/manifests/default-cni.yaml"


def network_policy_manifest(image: str) -> str:
    """What kind applies as the node's "default CNI" manifest: the pod network itself is the static
    bridge in ``/etc/cni/net.d``, so this only runs kube-router's firewall, which enforces NetworkPolicy
    with iptables and ipset (its router and Service proxy off: kube-proxy serves Services)."""
    return f"""# NetworkPolicy enforcement for cachewarden's kind node (devcluster/realnode/nodeimage.py)
apiVersion: v1
kind: ServiceAccount
metadata:
  name: kube-router
  namespace: kube-system
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: kube-router
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: kube-router
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: kube-router
subjects:
- kind: ServiceAccount
  name: kube-router
  namespace: kube-system
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kube-router
  namespace: kube-system
  labels: {{k8s-app: kube-router}}
spec:
  selector:
    matchLabels: {{k8s-app: kube-router}}
  template:
    metadata:
      labels: {{k8s-app: kube-router}}
    spec:
      hostNetwork: true
      priorityClassName: system-node-critical
      serviceAccountName: kube-router
      tolerations:
      - operator: Exists
      containers:
      - name: kube-router
        image: {image}
        imagePullPolicy: Never
        args: ["--run-router=false", "--run-firewall=true", "--run-service-proxy=false",
               "--enable-cni=false", "--hostname-override=$(NODE_NAME)", "--v=1"]
        env:
        - name: NODE_NAME
          valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
        securityContext:
          privileged: true
        resources:
          requests: {{cpu: 50m, memory: 50Mi}}
        volumeMounts:
        - {{name: lib-modules, mountPath: /lib/modules, readOnly: true}}
        - {{name: xtables-lock, mountPath: /run/xtables.lock}}
      volumes:
      - name: lib-modules
        hostPath: {{path: /lib/modules}}
      - name: xtables-lock
        hostPath: {{path: /run/xtables.lock, type: FileOrCreate}}
"""


def node_recipe(suite: str = DEFAULT_SUITE) -> RootfsRecipe:
    """The node's Debian root file system (before ``node/Dockerfile``)."""
    return RootfsRecipe(repository="cachewarden/kind-node-rootfs", suite=suite, packages=NODE_BASE_PACKAGES,
                        changes=(f"ENV PATH={DEFAULT_PATH}", "ENV container=docker"))


def netbase_recipe(suite: str = DEFAULT_SUITE) -> RootfsRecipe:
    """The root of kube-proxy's and kube-router's images: iptables, ipset, nftables, conntrack."""
    return RootfsRecipe(repository="cachewarden/kind-netbase", suite=suite, packages=NETBASE_PACKAGES,
                        changes=(f"ENV PATH={DEFAULT_PATH}",))


def node_files_digest(node_dir: Path = NODE_DIR) -> str:
    """sha256 over every file of ``node/`` (path, mode and content), in path order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in node_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(node_dir).as_posix()
        digest.update(f"{relative}\0{path.stat().st_mode & 0o777:o}\0".encode())
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def node_tag(kubernetes_version: str, parts: Mapping[str, str]) -> str:
    """``cachewarden/kind-node:<kubernetes version>-<12 hex of the inputs>``; ``parts`` maps each input
    (base image tags, file digests, binary checksums) to its value."""
    digest = hashlib.sha256(NODE_FORMAT.encode())
    for key in sorted(parts):
        digest.update(f"{key}={parts[key]}\n".encode())
    return f"{NODE_REPOSITORY}:{kubernetes_version}-{digest.hexdigest()[:12]}"


def component_tar(binary: Path, path_in_image: str) -> bytes:
    """An image root holding only ``binary`` at ``path_in_image`` (mode 0755) and an empty ``/tmp``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        parts = path_in_image.strip("/").split("/")
        for depth in range(1, len(parts)):
            info = tarfile.TarInfo("/".join(parts[:depth]))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        tmp = tarfile.TarInfo("tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
        info = tarfile.TarInfo("/".join(parts))
        info.mode, info.size = 0o755, binary.stat().st_size
        with binary.open("rb") as handle:
            tar.addfile(info, handle)
    return buffer.getvalue()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# The builds (docker)

Progress = Callable[[str], None]


def _run(command: Sequence[str], log: Path, what: str, stdin: bytes | None = None) -> str:
    """:func:`docker.run_logged` with the command's stdout returned, under the classic builder
    (BuildKit would fetch its Dockerfile frontend from a registry)."""
    return docker.run_logged(command, log, what=what, stdin=stdin, capture_stdout=True,
                             env={**os.environ, "DOCKER_BUILDKIT": "0"})


def _required_binaries(bin_dir: Path, names: Sequence[str]) -> dict[str, Path]:
    missing = [name for name in names if not (bin_dir / name).is_file()]
    if missing:
        raise DockerError(f"the node image needs {', '.join(missing)} in {bin_dir}: build them with "
                          "`devcluster/build.sh --real-node` (or `make binaries-real-node`)")
    return {name: bin_dir / name for name in names}


def ensure_node_image(*, environ: Mapping[str, str] | None = None, suite: str = DEFAULT_SUITE,
                      progress: Progress = print) -> BuiltImage:
    """The kind node image: reused when an image with its tag exists, else built (a few minutes cold,
    most of it mmdebstrap). Needs root, Docker, mmdebstrap and ``build.sh --real-node``'s binaries."""
    versions = binaries.read_version_table()
    bin_dir = binaries.bin_dir(environ)
    components = component_images(versions)
    needed = sorted({c.binary for c in components} | set(NODE_BINARIES))
    paths = _required_binaries(bin_dir, needed)
    docker.ensure_engine(environ)
    node_root = ensure_rootfs_image(node_recipe(suite), environ=environ, progress=progress)
    netbase = ensure_rootfs_image(netbase_recipe(suite), environ=environ, progress=progress)
    parts = {"node-rootfs": node_root.tag, "netbase": netbase.tag, "node-files": node_files_digest(),
             "cni-manifest": hashlib.sha256(network_policy_manifest("x").encode()).hexdigest()}
    parts |= {f"bin/{name}": _file_sha256(path) for name, path in paths.items()}
    parts |= {f"image/{c.ref}": f"{c.binary}@{c.path}:{c.on_netbase}:{c.entrypoint}" for c in components}
    tag = node_tag(versions["KUBERNETES_VERSION"], parts)
    if docker.image_exists(tag):
        progress(f"kind-node: {tag} exists, not rebuilt")
        return BuiltImage(name="kind-node", tag=tag, built=False, seconds=0.0,
                          size_bytes=docker.image_size(tag))

    started = time.monotonic()
    log = docker.realnode_dir(environ) / "logs" / f"{tag.replace('/', '_').replace(':', '_')}.log"
    log.unlink(missing_ok=True)
    prep = f"{NODE_REPOSITORY}-prep:{tag.rsplit(':', 1)[1]}"
    progress(f"kind-node: node/Dockerfile on {node_root.tag} (log {log})")
    _run(["docker", "build", "--quiet", "--force-rm", "--build-arg", f"NODE_BASE={node_root.tag}",
          "-t", prep, str(NODE_DIR)], log, "building the node base (devcluster/realnode/node/Dockerfile)")

    archives: list[tuple[str, bytes]] = []
    for component in components:
        progress(f"kind-node: image {component.ref}")
        if component.on_netbase:
            archive = _netbase_component(component, paths[component.binary], netbase.tag, log)
            archives.append((component.ref, archive))
        else:
            archives.append((component.ref, _scratch_component(component, paths[component.binary], log)))

    container = _run(["docker", "run", "-d", "--entrypoint", "sleep", prep, "infinity"], log,
                     "starting the node build container").strip()
    try:
        for name in NODE_BINARIES:
            _run(["docker", "cp", str(paths[name]), f"{container}:/usr/bin/{name}"], log, f"copying {name}")
        _run(["docker", "exec", container, "sh", "-c",
              f"chmod 0755 /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl && "
              f"chown root:root /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl && "
              f"printf %s {versions['KUBERNETES_VERSION']} > /kind/version"], log, "installing the binaries")
        netpol = next(c.ref for c in components if c.binary == "kube-router")
        _run(["docker", "exec", "-i", container, "sh", "-c",
              f"mkdir -p /kind/manifests && cat > {CNI_MANIFEST_PATH}"],
             log, "writing the NetworkPolicy manifest", stdin=network_policy_manifest(netpol).encode())
        _run(["docker", "exec", "-d", container, "containerd"], log,
             "starting containerd in the build container")
        _run(["docker", "exec", container, "sh", "-c",
              "for i in $(seq 1 50); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; ctr version"],
             log, "waiting for containerd in the build container")
        for ref, archive in archives:
            progress(f"kind-node: preloading {ref}")
            _run(["docker", "exec", "-i", container, "ctr", "--namespace=k8s.io", "images", "import",
                  "--label=io.cri-containerd.pinned=pinned", "--all-platforms", "--no-unpack", "-"],
                 log, f"importing {ref} into the node's containerd", stdin=archive)
        listed = _run(["docker", "exec", container, "ctr", "--namespace=k8s.io", "images", "list", "-q"], log,
                      "listing the preloaded images")
        absent = [ref for ref, _ in archives if ref not in listed.split()]
        if absent:
            raise DockerError(f"the node's containerd does not list {absent} after the import; see {log}")
        _run(["docker", "exec", container, "sh", "-c", "pkill containerd; sleep 1"], log,
             "stopping containerd")
        _run(["docker", "commit",
              "--change", 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]',
              "--change", "CMD []",
              "--change", f"LABEL io.cachewarden.kubernetes-version={versions['KUBERNETES_VERSION']}",
              container, tag], log, "committing the node image")
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", container], capture_output=True, check=False)
    seconds = time.monotonic() - started
    size = docker.image_size(tag)
    progress(f"kind-node: built {tag} in {seconds:.0f} s ({size / 2**20:.0f} MiB)")
    return BuiltImage(name="kind-node", tag=tag, built=True, seconds=seconds, size_bytes=size)


def _scratch_component(component: ComponentImage, binary: Path, log: Path) -> bytes:
    """``docker import`` the binary alone, tag it with the component's name, ``docker save`` it."""
    changes = [f"ENV PATH={DEFAULT_PATH}"]
    if component.entrypoint:
        changes.append(f"ENTRYPOINT {list(component.entrypoint)!r}".replace("'", '"'))
    command = ["docker", "import"]
    for change in changes:
        command += ["--change", change]
    _run([*command, "-", component.ref], log, f"importing {component.ref}",
         stdin=component_tar(binary, component.path))
    return subprocess.run(["docker", "save", component.ref], capture_output=True, check=True).stdout


def _netbase_component(component: ComponentImage, binary: Path, netbase: str, log: Path) -> bytes:
    """The binary copied onto the netbase image (a container committed with the component's name)."""
    container = _run(["docker", "create", "--entrypoint", component.path, netbase], log,
                     f"creating {component.ref}").strip()
    try:
        _run(["docker", "cp", "-", f"{container}:/"], log, f"copying {component.binary}",
             stdin=component_tar(binary, component.path))
        command = ["docker", "commit"]
        if component.entrypoint:
            command += ["--change", f"ENTRYPOINT {list(component.entrypoint)!r}".replace("'", '"')]
        _run([*command, container, component.ref], log, f"committing {component.ref}")
    finally:
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
    return subprocess.run(["docker", "save", component.ref], capture_output=True, check=True).stdout
