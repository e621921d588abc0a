"""Pure pod-spec logic of the process kubelet: no processes, no network, no files.

Everything the kubelet decides from a pod manifest lives here so it can be tested as data in, data
out: environment resolution (``env``/``envFrom``/``valueFrom``), Kubernetes' ``$(VAR)`` expansion,
the command line a container runs, the files each volume projects, where mounts appear under the
container's root, probe plans and the pod status (phase and conditions) computed from the
containers' states. Lookups of ConfigMaps and Secrets, and ServiceAccount tokens, are injected.

Pods and containers are the plain dicts the API server returns (camelCase keys).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol

from devcluster import images

Obj = Mapping[str, Any]

# Container waiting reasons, as the real kubelet spells them (clients such as kubectl and kstatus
# know these), plus devcluster's own for an image without a local stand-in.
REASON_CONFIG_ERROR = "CreateContainerConfigError"
REASON_CONTAINER_CREATING = "ContainerCreating"
REASON_IMAGE_NOT_MAPPED = images.ImageNotMappedError.reason
REASON_RUN_ERROR = images.ProgramNotFoundError.reason
REASON_CRASH_LOOP = "CrashLoopBackOff"
REASON_POD_INITIALIZING = "PodInitializing"

DEFAULT_FILE_MODE = 0o644
SERVICE_ACCOUNT_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
SUPPORTED_VOLUME_TYPES = ("configMap", "secret", "emptyDir", "projected", "downwardAPI")
_KNOWN_VOLUME_TYPES = (
    "hostPath",
    "persistentVolumeClaim",
    "nfs",
    "csi",
    "ephemeral",
    "image",
    "iscsi",
    "cephfs",
    "rbd",
    "fc",
    "azureFile",
    "azureDisk",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "glusterfs",
    "portworxVolume",
    "flexVolume",
    "flocker",
    "quobyte",
    "scaleIO",
    "storageos",
    "vsphereVolume",
    "photonPersistentDisk",
    "cinder",
)


class PodSpecError(ValueError):
    """A pod cannot run as specified; ``reason`` is the container waiting reason to report."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(message)


class ObjectLookup(Protocol):
    """Reads ConfigMaps and Secrets (None when they do not exist)."""

    def configmap(self, namespace: str, name: str) -> Obj | None:
        """The ConfigMap ``namespace/name`` as the API returns it, or None."""
        ...

    def secret(self, namespace: str, name: str) -> Obj | None:
        """The Secret ``namespace/name`` as the API returns it, or None."""
        ...


@dataclass
class StaticLookup:
    """An :class:`ObjectLookup` over fixed dicts keyed by ``(namespace, name)`` (tests, dry runs)."""

    configmaps: dict[tuple[str, str], Obj] = field(default_factory=dict)
    secrets: dict[tuple[str, str], Obj] = field(default_factory=dict)

    def configmap(self, namespace: str, name: str) -> Obj | None:
        """See :class:`ObjectLookup`."""
        return self.configmaps.get((namespace, name))

    def secret(self, namespace: str, name: str) -> Obj | None:
        """See :class:`ObjectLookup`."""
        return self.secrets.get((namespace, name))


# --- object data ----------------------------------------------------------------------------------


def configmap_values(configmap: Obj) -> dict[str, bytes]:
    """All keys of a ConfigMap as bytes: ``data`` (UTF-8) and ``binaryData`` (base64 on the wire)."""
    values = {key: str(value).encode() for key, value in (configmap.get("data") or {}).items()}
    for key, value in (configmap.get("binaryData") or {}).items():
        values[key] = _b64decode(value, f"binaryData[{key!r}] of ConfigMap {_ref(configmap)}")
    return values


def secret_values(secret: Obj) -> dict[str, bytes]:
    """All keys of a Secret as bytes (``data`` is base64 on the wire)."""
    return {
        key: _b64decode(value, f"data[{key!r}] of Secret {_ref(secret)}")
        for key, value in (secret.get("data") or {}).items()
    }


def _b64decode(value: Any, where: str) -> bytes:
    try:
        return base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise PodSpecError(REASON_CONFIG_ERROR, f"{where} is not valid base64: {exc}") from exc


def _ref(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


# --- $(VAR) expansion -----------------------------------------------------------------------------


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion, as applied to env values, command, args and subPathExpr.

    ``$(NAME)`` becomes the value of NAME when it is defined and stays as written when it is not;
    ``$$`` is an escaped ``$`` (so ``$$(NAME)`` yields the literal ``$(NAME)``); a ``$`` followed by
    anything else, or an unclosed ``$(``, is kept as is.
    """
    out: list[str] = []
    i = 0
    length = len(text)
    while i < length:
        char = text[i]
        if char != "$" or i + 1 >= length:
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : close]
                out.append(mapping.get(name, f"$({name})"))
                i = close + 1
        else:
            out.append("$" + following)
            i += 2
    return "".join(out)


# --- downward API ---------------------------------------------------------------------------------

_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")
SUPPORTED_FIELD_PATHS = (
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "metadata.labels['<key>']",
    "metadata.annotations['<key>']",
    "metadata.labels",
    "metadata.annotations",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
)


def resolve_field_ref(pod: Obj, field_path: str) -> str:
    """The value of a downward-API ``fieldRef`` for ``pod``; unsupported paths raise
    :class:`PodSpecError` listing the supported ones."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple: dict[str, Callable[[], Any]] = {
        "metadata.name": lambda: meta.get("name", ""),
        "metadata.namespace": lambda: meta.get("namespace", ""),
        "metadata.uid": lambda: meta.get("uid", ""),
        "spec.nodeName": lambda: spec.get("nodeName", ""),
        "spec.serviceAccountName": lambda: spec.get("serviceAccountName", ""),
        "status.hostIP": lambda: status.get("hostIP", ""),
        "status.podIP": lambda: status.get("podIP", ""),
        "status.hostIPs": lambda: ",".join(i.get("ip", "") for i in status.get("hostIPs") or []),
        "status.podIPs": lambda: ",".join(i.get("ip", "") for i in status.get("podIPs") or []),
        "metadata.labels": lambda: _format_map(meta.get("labels") or {}),
        "metadata.annotations": lambda: _format_map(meta.get("annotations") or {}),
    }
    if field_path in simple:
        return str(simple[field_path]() or "")
    match = _SUBSCRIPT.match(field_path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise PodSpecError(
        REASON_CONFIG_ERROR,
        f"fieldRef.fieldPath {field_path!r} is not supported; supported: {', '.join(SUPPORTED_FIELD_PATHS)}",
    )


def _format_map(values: Mapping[str, Any]) -> str:
    # The downward API's format for whole label/annotation maps: key="value" lines, sorted.
    return "\n".join(f'{k}="{_escape(str(v))}"' for k, v in sorted(values.items()))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


_BINARY_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL_SUFFIXES = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes resource quantity (``500m``, ``1Gi``, ``2``, ``1e3``) as a Decimal."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise PodSpecError(
            REASON_CONFIG_ERROR,
            f"resource quantity {value!r} is not a valid quantity (accepted: e.g. 250m, 2, 512Mi, 1G, 1e3)",
        )
    try:
        number = Decimal(match.group(1))
    except InvalidOperation as exc:
        raise PodSpecError(REASON_CONFIG_ERROR, f"resource quantity {value!r} has a bad number") from exc
    suffix = match.group(2) or ""
    if suffix in _BINARY_SUFFIXES:
        return number * _BINARY_SUFFIXES[suffix]
    if suffix[:1] in {"e", "E"}:
        return number * (Decimal(10) ** int(suffix[1:]))
    return number * _DECIMAL_SUFFIXES[suffix]


SUPPORTED_RESOURCES = (
    "limits.cpu",
    "limits.memory",
    "limits.ephemeral-storage",
    "requests.cpu",
    "requests.memory",
    "requests.ephemeral-storage",
)


def resolve_resource_field_ref(
    pod: Obj,
    container_name: str,
    resource: str,
    divisor: Any = None,
    node_allocatable: Mapping[str, Any] | None = None,
) -> str:
    """The value of a ``resourceFieldRef``: the container's request or limit divided by ``divisor``
    and rounded up, as Kubernetes does. A missing limit reads as the node's allocatable amount."""
    if resource not in SUPPORTED_RESOURCES:
        raise PodSpecError(
            REASON_CONFIG_ERROR,
            f"resourceFieldRef.resource {resource!r} is not "
            f"supported; supported: {', '.join(SUPPORTED_RESOURCES)}",
        )
    containers = [
        *((pod.get("spec") or {}).get("containers") or []),
        *((pod.get("spec") or {}).get("initContainers") or []),
    ]
    container = next((c for c in containers if c.get("name") == container_name), None)
    if container is None:
        raise PodSpecError(
            REASON_CONFIG_ERROR,
            f"resourceFieldRef.containerName {container_name!r} names no container of the pod",
        )
    kind, name = resource.split(".", 1)
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is None:
        raw = (node_allocatable or {}).get(name) if kind == "limits" else "0"
    if raw is None:
        raw = "0"
    amount = parse_quantity(raw)
    unit = parse_quantity(divisor if divisor not in (None, "", 0, "0") else "1")
    if unit <= 0:
        raise PodSpecError(REASON_CONFIG_ERROR, f"resourceFieldRef.divisor {divisor!r} must be positive")
    return str(math.ceil(amount / unit))


# --- environment ----------------------------------------------------------------------------------


def valid_env_name(name: str) -> bool:
    """Kubernetes' (relaxed) rule for environment variable names: printable ASCII without '='."""
    return bool(name) and "=" not in name and all(32 <= ord(c) < 127 for c in name)


@dataclass
class EnvResult:
    """The container's environment (in definition order) and the names envFrom had to skip."""

    values: dict[str, str]
    skipped_names: list[str] = field(default_factory=list)


def resolve_env(
    pod: Obj,
    container: Obj,
    lookup: ObjectLookup,
    *,
    service_env: Mapping[str, str] | None = None,
    node_allocatable: Mapping[str, Any] | None = None,
) -> EnvResult:
    """The container's own environment: ``envFrom`` first (later sources win), then ``env`` (which
    wins over ``envFrom``), each ``env`` value ``$(VAR)``-expanded with what is defined so far and
    ``service_env``. Missing optional references leave the variable out; a missing required
    ConfigMap, Secret or key raises :class:`PodSpecError` naming the variable and the reference."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    cname = container.get("name", "")
    values: dict[str, str] = {}
    skipped: list[str] = []
    for index, source in enumerate(container.get("envFrom") or []):
        prefix = source.get("prefix") or ""
        where = f"container {cname!r}: envFrom[{index}]"
        data: dict[str, bytes] | None
        if "configMapRef" in source:
            ref = source["configMapRef"]
            data = _env_source(
                lookup.configmap(namespace, ref.get("name", "")),
                configmap_values,
                "ConfigMap",
                namespace,
                ref,
                where,
            )
        elif "secretRef" in source:
            ref = source["secretRef"]
            data = _env_source(
                lookup.secret(namespace, ref.get("name", "")), secret_values, "Secret", namespace, ref, where
            )
        else:
            raise PodSpecError(
                REASON_CONFIG_ERROR, f"{where}: needs configMapRef or secretRef, got keys {sorted(source)}"
            )
        for key, raw in (data or {}).items():
            name = prefix + key
            if valid_env_name(name):
                values[name] = raw.decode("utf-8", "replace")
            else:
                skipped.append(name)
    services = dict(service_env or {})
    for var in container.get("env") or []:
        name = var.get("name", "")
        where = f"container {cname!r}: env {name!r}"
        if "valueFrom" not in var or var.get("valueFrom") is None:
            values[name] = expand(str(var.get("value") or ""), {**services, **values})
            continue
        resolved = _resolve_value_from(
            pod, cname, var["valueFrom"], lookup, namespace, where, node_allocatable
        )
        if resolved is not None:
            values[name] = resolved
    return EnvResult(values=values, skipped_names=skipped)


def _env_source(
    obj: Obj | None,
    to_values: Callable[[Obj], dict[str, bytes]],
    kind: str,
    namespace: str,
    ref: Obj,
    where: str,
) -> dict[str, bytes] | None:
    if obj is None:
        if ref.get("optional"):
            return None
        raise PodSpecError(
            REASON_CONFIG_ERROR,
            f"{where}: {kind} {namespace}/{ref.get('name', '')} not found "
            "(mark the reference optional: true to start without it)",
        )
    return to_values(obj)


def _resolve_value_from(
    pod: Obj,
    cname: str,
    value_from: Obj,
    lookup: ObjectLookup,
    namespace: str,
    where: str,
    node_allocatable: Mapping[str, Any] | None,
) -> str | None:
    if "fieldRef" in value_from:
        try:
            return resolve_field_ref(pod, (value_from["fieldRef"] or {}).get("fieldPath", ""))
        except PodSpecError as exc:
            raise PodSpecError(exc.reason, f"{where}: {exc.message}") from None
    if "resourceFieldRef" in value_from:
        ref = value_from["resourceFieldRef"] or {}
        try:
            return resolve_resource_field_ref(
                pod,
                ref.get("containerName") or cname,
                ref.get("resource", ""),
                ref.get("divisor"),
                node_allocatable,
            )
        except PodSpecError as exc:
            raise PodSpecError(exc.reason, f"{where}: {exc.message}") from None
    for key_ref, kind, fetch, to_values in (
        ("configMapKeyRef", "ConfigMap", lookup.configmap, configmap_values),
        ("secretKeyRef", "Secret", lookup.secret, secret_values),
    ):
        if key_ref not in value_from:
            continue
        ref = value_from[key_ref] or {}
        name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
        obj = fetch(namespace, name)
        if obj is None:
            if optional:
                return None
            raise PodSpecError(
                REASON_CONFIG_ERROR,
                f"{where}: {kind} {namespace}/{name} not found "
                "(mark the reference optional: true to start without it)",
            )
        data = to_values(obj)
        if key not in data:
            if optional:
                return None
            keys = ", ".join(sorted(data)) or "none"
            raise PodSpecError(
                REASON_CONFIG_ERROR,
                f"{where}: couldn't find key {key} in {kind} {namespace}/{name} (its keys: {keys})",
            )
        return data[key].decode("utf-8", "replace")
    raise PodSpecError(
        REASON_CONFIG_ERROR,
        f"{where}: valueFrom {sorted(value_from)} is not supported; "
        "supported: fieldRef, resourceFieldRef, configMapKeyRef, "
        "secretKeyRef",
    )


# --- command line ---------------------------------------------------------------------------------


def container_ports(container: Obj, protocol: str = "TCP") -> list[int]:
    """The container's declared ports of ``protocol`` (TCP by default), in declaration order."""
    return [
        int(p["containerPort"])
        for p in container.get("ports") or []
        if (p.get("protocol") or "TCP") == protocol and p.get("containerPort")
    ]


def build_command(
    container: Obj,
    spec: images.ImageSpec,
    env: Mapping[str, str],
    *,
    pod_ip: str,
    root: str,
) -> list[str]:
    """The argv a container runs: Kubernetes' command/args rules over the image's defaults,
    ``$(VAR)``-expanded with ``env``, the program mapped to its local executable and, for
    redis-server, the arguments completed for the pod's address (see :mod:`devcluster.images`).
    Raises :class:`PodSpecError` when there is nothing to run or the program is not in the image."""
    command = [expand(str(a), env) for a in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    argv = images.container_argv(spec, command, args)
    if not argv:
        raise PodSpecError(
            REASON_RUN_ERROR,
            f"container {container.get('name')!r}: no command and image {spec.image!r} has no default",
        )
    return local_argv(argv, container, spec, pod_ip=pod_ip, root=root)


def local_argv(
    argv: Sequence[str], container: Obj, spec: images.ImageSpec, *, pod_ip: str, root: str
) -> list[str]:
    """An in-image command line (container command or exec probe) as a local one: the program
    mapped to its executable; redis-server's arguments completed for the pod's address and redis-cli
    pointed at it (inside a real pod, 127.0.0.1 is the pod itself; here it is the host)."""
    try:
        program = spec.program_path(argv[0])
    except images.ProgramNotFoundError as exc:
        raise PodSpecError(exc.reason, f"container {container.get('name')!r}: {exc}") from None
    rest = list(argv[1:])
    if program == images.REDIS_SERVER:
        # A config file is the first argument; the process cannot see the container's mount paths.
        if rest and rest[0].startswith("/"):
            rest[0] = root.rstrip("/") + rest[0]
        rest = images.complete_redis_args(rest, pod_ip, container_ports(container))
    elif program == images.REDIS_CLI:
        rest = images.complete_redis_cli_args(rest, pod_ip, container_ports(container))
    return [program, *rest]


# --- volumes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProjectedFile:
    """One file a volume projects: its path inside the volume, content and permission bits."""

    path: str
    data: bytes
    mode: int


@dataclass(frozen=True)
class TokenNeed:
    """A ServiceAccount token a projected volume asks for (the kubelet fetches it: TokenRequest)."""

    audience: str
    expiration_seconds: int


@dataclass(frozen=True)
class VolumeContent:
    """What a volume holds: a set of files (kept in sync) or a plain directory (emptyDir)."""

    name: str
    kind: Literal["files", "directory"]
    files: tuple[ProjectedFile, ...] = ()
    sources: tuple[tuple[str, str], ...] = ()  # ("ConfigMap"|"Secret", name): what to watch


def volume_type(volume: Obj) -> str:
    """The volume's source type (``configMap``, ``secret``, ``emptyDir``, ...)."""
    for key in (*SUPPORTED_VOLUME_TYPES, *_KNOWN_VOLUME_TYPES):
        if key in volume:
            return key
    others = [k for k in volume if k != "name"]
    return others[0] if others else "emptyDir"


def plan_volume(
    pod: Obj,
    volume: Obj,
    lookup: ObjectLookup,
    token_for: Callable[[TokenNeed], str],
    node_allocatable: Mapping[str, Any] | None = None,
) -> VolumeContent:
    """The files ``volume`` projects for ``pod`` right now. Missing required ConfigMaps, Secrets or
    keys and unsupported volume types raise :class:`PodSpecError` (reason ContainerCreating: the
    kubelet keeps the pod waiting and retries, as a real one does with a failed mount)."""
    name = volume.get("name", "")
    kind = volume_type(volume)
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    where = f"volume {name!r}"
    if kind == "emptyDir":
        return VolumeContent(name=name, kind="directory")
    source = volume.get(kind) or {}
    if kind in ("configMap", "secret"):
        default_mode = int(source.get("defaultMode", DEFAULT_FILE_MODE))
        object_files = _object_files(kind, source, namespace, lookup, default_mode, where)
        ref = (
            ("ConfigMap", source.get("name", ""))
            if kind == "configMap"
            else ("Secret", source.get("secretName", ""))
        )
        return VolumeContent(name=name, kind="files", files=tuple(object_files), sources=(ref,))
    if kind == "downwardAPI":
        default_mode = int(source.get("defaultMode", DEFAULT_FILE_MODE))
        downward = _downward_files(pod, source.get("items") or [], default_mode, where, node_allocatable)
        return VolumeContent(name=name, kind="files", files=tuple(downward))
    if kind == "projected":
        default_mode = int(source.get("defaultMode", DEFAULT_FILE_MODE))
        files: list[ProjectedFile] = []
        sources: list[tuple[str, str]] = []
        for index, item in enumerate(source.get("sources") or []):
            item_where = f"{where} source {index}"
            if "configMap" in item:
                files += _object_files(
                    "configMap", item["configMap"], namespace, lookup, default_mode, item_where
                )
                sources.append(("ConfigMap", item["configMap"].get("name", "")))
            elif "secret" in item:
                files += _object_files("secret", item["secret"], namespace, lookup, default_mode, item_where)
                sources.append(("Secret", item["secret"].get("name", "")))
            elif "downwardAPI" in item:
                files += _downward_files(
                    pod, item["downwardAPI"].get("items") or [], default_mode, item_where, node_allocatable
                )
            elif "serviceAccountToken" in item:
                token_source = item["serviceAccountToken"]
                need = TokenNeed(
                    audience=str(token_source.get("audience") or ""),
                    expiration_seconds=int(token_source.get("expirationSeconds") or 3600),
                )
                path = _safe_relative(token_source.get("path", "token"), item_where)
                # Tokens are credentials: owner-only unless the pod asked for a mode.
                mode = int(source.get("defaultMode", 0o600))
                files.append(ProjectedFile(path, token_for(need).encode(), mode))
            else:
                raise PodSpecError(
                    REASON_CONTAINER_CREATING,
                    f"{item_where}: projected source "
                    f"{sorted(item)} is not supported; supported: configMap, secret, "
                    "downwardAPI, serviceAccountToken",
                )
        return VolumeContent(name=name, kind="files", files=tuple(files), sources=tuple(sources))
    raise PodSpecError(
        REASON_CONTAINER_CREATING,
        f"{where}: volume type {kind!r} is not supported by the devcluster kubelet; "
        f"supported: {', '.join(SUPPORTED_VOLUME_TYPES)}",
    )


def _object_files(
    kind: str,
    source: Obj,
    namespace: str,
    lookup: ObjectLookup,
    default_mode: int,
    where: str,
) -> list[ProjectedFile]:
    optional = bool(source.get("optional"))
    if kind == "configMap":
        obj_name = source.get("name", "")
        obj = lookup.configmap(namespace, obj_name)
        label = "ConfigMap"
        values = configmap_values(obj) if obj is not None else {}
    else:
        obj_name = source.get("secretName") or source.get("name", "")
        obj = lookup.secret(namespace, obj_name)
        label = "Secret"
        values = secret_values(obj) if obj is not None else {}
    if obj is None:
        if optional:
            return []
        raise PodSpecError(REASON_CONTAINER_CREATING, f"{where}: {label} {namespace}/{obj_name} not found")
    items = source.get("items")
    if not items:
        return [
            ProjectedFile(_safe_relative(key, where), data, default_mode)
            for key, data in sorted(values.items())
        ]
    files = []
    for item in items:
        key = item.get("key", "")
        if key not in values:
            if optional:
                continue
            raise PodSpecError(
                REASON_CONTAINER_CREATING,
                f"{where}: {label} {namespace}/{obj_name} "
                f"has no key {key!r} (its keys: {', '.join(sorted(values)) or 'none'})",
            )
        files.append(
            ProjectedFile(
                _safe_relative(item.get("path") or key, where),
                values[key],
                int(item.get("mode", default_mode)),
            )
        )
    return files


def _downward_files(
    pod: Obj,
    items: Sequence[Obj],
    default_mode: int,
    where: str,
    node_allocatable: Mapping[str, Any] | None,
) -> list[ProjectedFile]:
    files = []
    for item in items:
        path = _safe_relative(item.get("path", ""), where)
        try:
            if "fieldRef" in item:
                value = resolve_field_ref(pod, (item["fieldRef"] or {}).get("fieldPath", ""))
            elif "resourceFieldRef" in item:
                ref = item["resourceFieldRef"] or {}
                value = resolve_resource_field_ref(
                    pod,
                    ref.get("containerName", ""),
                    ref.get("resource", ""),
                    ref.get("divisor"),
                    node_allocatable,
                )
            else:
                raise PodSpecError(
                    REASON_CONTAINER_CREATING, f"item {path!r} needs fieldRef or resourceFieldRef"
                )
        except PodSpecError as exc:
            raise PodSpecError(REASON_CONTAINER_CREATING, f"{where}: {exc.message}") from None
        files.append(ProjectedFile(path, value.encode(), int(item.get("mode", default_mode))))
    return files


def _safe_relative(path: Any, where: str) -> str:
    text = str(path)
    parts = text.split("/")
    if not text or text.startswith("/") or ".." in parts or any(p.startswith("..") for p in parts):
        raise PodSpecError(
            REASON_CONTAINER_CREATING, f"{where}: file path {text!r} must be relative without '..' elements"
        )
    return text


# --- mounts ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MountLink:
    """Where a volumeMount appears for the process: ``link`` (``root`` + mountPath) points at
    ``target`` (the volume's directory, or a path inside it for a subPath)."""

    volume: str
    mount_path: str
    link: str
    target: str
    read_only: bool


def mount_env_name(volume_name: str) -> str:
    """``DEVCLUSTER_MOUNT_<NAME>``: the volume name upper-cased, other characters as ``_``."""
    return "DEVCLUSTER_MOUNT_" + re.sub(r"[^A-Z0-9_]", "_", volume_name.upper())


def plan_mounts(
    container: Obj,
    root: str,
    volume_dir: Callable[[str], str],
    env: Mapping[str, str] | None = None,
) -> list[MountLink]:
    """The container's volumeMounts as links under its root directory. ``volume_dir(name)`` is
    where the kubelet keeps a volume; ``env`` expands ``subPathExpr``."""
    links = []
    for mount in container.get("volumeMounts") or []:
        mount_path = str(mount.get("mountPath", ""))
        if not mount_path.startswith("/") or ".." in mount_path.split("/"):
            raise PodSpecError(
                REASON_CONTAINER_CREATING,
                f"container {container.get('name')!r}: "
                f"mountPath {mount_path!r} must be absolute without '..' elements",
            )
        sub_path = mount.get("subPath") or ""
        if mount.get("subPathExpr"):
            sub_path = expand(str(mount["subPathExpr"]), env or {})
        target = volume_dir(mount.get("name", ""))
        if sub_path:
            target = target.rstrip("/") + "/" + _safe_relative(sub_path, f"mount {mount_path!r}")
        links.append(
            MountLink(
                volume=mount.get("name", ""),
                mount_path=mount_path,
                link=root.rstrip("/") + mount_path.rstrip("/"),
                target=target,
                read_only=bool(mount.get("readOnly")),
            )
        )
    return links


def mount_env(links: Sequence[MountLink]) -> dict[str, str]:
    """``DEVCLUSTER_MOUNT_<VOLUME>=<host path of the mount>`` for each mounted volume (the first
    mount wins when one volume is mounted twice)."""
    values: dict[str, str] = {}
    for link in links:
        values.setdefault(mount_env_name(link.volume), link.link)
    return values


def service_account_volume(pod: Obj, container: Obj) -> str | None:
    """The name of the volume mounted at the ServiceAccount path in ``container`` when it carries a
    token (the API server's ``kube-api-access-*`` volume), else None."""
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for mount in container.get("volumeMounts") or []:
        if str(mount.get("mountPath", "")).rstrip("/") != SERVICE_ACCOUNT_MOUNT_PATH:
            continue
        volume = volumes.get(mount.get("name"))
        sources = ((volume or {}).get("projected") or {}).get("sources") or []
        if any("serviceAccountToken" in s for s in sources):
            return str(mount.get("name"))
    return None


# --- probes ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProbePlan:
    """A probe as the kubelet runs it, with defaults applied and named ports resolved."""

    kind: Literal["http", "tcp", "exec"]
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int
    host: str = ""
    port: int = 0
    path: str = "/"
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()
    command: tuple[str, ...] = ()
    termination_grace: float | None = None


def _resolve_port(port: Any, container: Obj, where: str) -> int:
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        number = int(port)
        if 0 < number < 65536:
            return number
        raise PodSpecError(REASON_CONFIG_ERROR, f"{where}: port {port!r} is outside 1-65535")
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    names = [p.get("name") for p in container.get("ports") or [] if p.get("name")]
    raise PodSpecError(
        REASON_CONFIG_ERROR,
        f"{where}: named port {port!r} is not declared by the "
        f"container (declared: {', '.join(names) or 'none'})",
    )


def plan_probe(probe: Obj | None, container: Obj, pod_ip: str, kind: str = "readiness") -> ProbePlan | None:
    """The plan of a readiness/liveness/startup probe (None when the container has none). gRPC
    probes and unresolvable ports raise :class:`PodSpecError`."""
    if not probe:
        return None
    where = f"container {container.get('name')!r}: {kind}Probe"
    timing = ProbePlan(
        kind="tcp",
        initial_delay=float(probe.get("initialDelaySeconds") or 0),
        period=float(probe.get("periodSeconds") or 10),
        timeout=float(probe.get("timeoutSeconds") or 1),
        success_threshold=int(probe.get("successThreshold") or 1),
        failure_threshold=int(probe.get("failureThreshold") or 3),
        termination_grace=(
            float(probe["terminationGracePeriodSeconds"])
            if probe.get("terminationGracePeriodSeconds") is not None
            else None
        ),
    )
    if "httpGet" in probe:
        http = probe["httpGet"] or {}
        return dataclasses.replace(
            timing,
            kind="http",
            host=http.get("host") or pod_ip,
            port=_resolve_port(http.get("port"), container, where),
            path=http.get("path") or "/",
            scheme=(http.get("scheme") or "HTTP").upper(),
            headers=tuple((h.get("name", ""), h.get("value", "")) for h in http.get("httpHeaders") or []),
        )
    if "tcpSocket" in probe:
        tcp = probe["tcpSocket"] or {}
        return dataclasses.replace(
            timing,
            host=tcp.get("host") or pod_ip,
            port=_resolve_port(tcp.get("port"), container, where),
        )
    if "exec" in probe:
        command = tuple(str(a) for a in (probe["exec"] or {}).get("command") or [])
        if not command:
            raise PodSpecError(REASON_CONFIG_ERROR, f"{where}: exec.command is empty")
        return dataclasses.replace(timing, kind="exec", command=command)
    raise PodSpecError(
        REASON_CONFIG_ERROR,
        f"{where}: handler {sorted(k for k in probe if isinstance(probe[k], dict))} "
        "is not supported; supported: httpGet, tcpSocket, exec",
    )


# --- status ---------------------------------------------------------------------------------------


def waiting_state(reason: str, message: str = "") -> dict[str, Any]:
    """A containerStatus ``state`` for a container that is not running yet."""
    waiting: dict[str, Any] = {"reason": reason}
    if message:
        waiting["message"] = message
    return {"waiting": waiting}


def terminated_reason(exit_code: int) -> str:
    """The terminated ``reason`` for an exit code, as container runtimes report it."""
    return "Completed" if exit_code == 0 else "Error"


def exit_code_of(returncode: int) -> int:
    """A process return code as a container exit code: death by signal N reads 128+N."""
    return 128 - returncode if returncode < 0 else returncode


def pod_phase(restart_policy: str, init_statuses: Sequence[Obj], statuses: Sequence[Obj]) -> str:
    """The pod phase from its containers' states, by the real kubelet's rules.

    A container that waits after having terminated (restarting, in back-off) counts as stopped, so
    a crash-looping pod with restartPolicy Always is Running, not Pending.
    """
    policy = restart_policy or "Always"
    for status in init_statuses:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is not None and terminated.get("exitCode", 0) == 0:
            continue
        last = (status.get("lastState") or {}).get("terminated")
        failed = terminated is not None or last is not None
        if failed and policy == "Never":
            return "Failed"
        return "Pending"
    waiting = running = stopped = succeeded = 0
    for status in statuses:
        state = status.get("state") or {}
        if "running" in state and state["running"] is not None:
            running += 1
        elif state.get("terminated") is not None:
            stopped += 1
            if state["terminated"].get("exitCode", 0) == 0:
                succeeded += 1
        elif (status.get("lastState") or {}).get("terminated") is not None:
            stopped += 1
        else:
            waiting += 1
    if waiting:
        return "Pending"
    if running:
        return "Running"
    if stopped:
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        if policy == "Never":
            return "Failed"
        return "Running"
    return "Pending"


def _condition(
    previous: Mapping[str, Obj],
    kind: str,
    ok: bool,
    now: str,
    reason: str = "",
    message: str = "",
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    since = before.get("lastTransitionTime") if before and before.get("status") == status else None
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": since or now,
    }
    if not ok and reason:
        condition["reason"] = reason
    if not ok and message:
        condition["message"] = message
    return condition


def pod_conditions(
    pod: Obj,
    phase: str,
    init_statuses: Sequence[Obj],
    statuses: Sequence[Obj],
    now: str,
) -> list[dict[str, Any]]:
    """PodScheduled, Initialized, ContainersReady and Ready, keeping ``lastTransitionTime`` of the
    previous status when a condition did not change. Readiness gates are honoured: Ready needs each
    gate's condition (set by someone else) to be True."""
    previous_list = (pod.get("status") or {}).get("conditions") or []
    previous = {c.get("type"): c for c in previous_list}
    terminal = phase in ("Succeeded", "Failed")
    incomplete = [
        s.get("name")
        for s in init_statuses
        if ((s.get("state") or {}).get("terminated") or {}).get("exitCode", 1) != 0
    ]
    initialized = not incomplete or phase == "Succeeded"
    unready = [str(s.get("name")) for s in statuses if not s.get("ready")]
    gates = [g.get("conditionType") for g in (pod.get("spec") or {}).get("readinessGates") or []]
    gates_unready = [g for g in gates if (previous.get(g) or {}).get("status") != "True"]
    containers_ready = not unready and not terminal
    ready = containers_ready and not gates_unready
    if terminal:
        ready_reason, ready_message = "PodCompleted", ""
    elif unready:
        ready_reason, ready_message = (
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
        )
    else:
        ready_reason, ready_message = (
            "ReadinessGatesNotReady",
            f"corresponding condition of pod readiness gate {gates_unready} are not True",
        )
    return [
        _condition(
            previous,
            "Initialized",
            initialized,
            now,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(str(n) for n in incomplete)}]",
        ),
        _condition(previous, "Ready", ready, now, ready_reason, ready_message),
        _condition(
            previous,
            "ContainersReady",
            containers_ready,
            now,
            "PodCompleted" if terminal else "ContainersNotReady",
            "" if terminal else f"containers with unready status: [{' '.join(unready)}]",
        ),
        _condition(previous, "PodScheduled", True, now),
    ]


def pod_status(
    pod: Obj,
    *,
    init_statuses: Sequence[Obj],
    statuses: Sequence[Obj],
    pod_ip: str,
    host_ip: str,
    start_time: str,
    now: str,
) -> dict[str, Any]:
    """The whole ``status`` the kubelet reports for ``pod`` (phase, conditions, IPs, container
    statuses). Deterministic given its inputs, so the kubelet writes only when something changed."""
    phase = pod_phase((pod.get("spec") or {}).get("restartPolicy", "Always"), init_statuses, statuses)
    status: dict[str, Any] = {
        "phase": phase,
        "conditions": pod_conditions(pod, phase, init_statuses, statuses, now),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "containerStatuses": [dict(s) for s in statuses],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if init_statuses:
        status["initContainerStatuses"] = [dict(s) for s in init_statuses]
    return status


_STATE_KEYS = ("waiting", "running", "terminated")
_STATE_FIELDS = {
    "waiting": ("reason", "message"),
    "running": ("startedAt",),
    "terminated": ("exitCode", "signal", "reason", "message", "startedAt", "finishedAt", "containerID"),
}


def _with_nulls(value: Obj | None, state_key: str) -> dict[str, Any] | None:
    # A merge keeps keys the patch does not mention: name every field, null where absent.
    if value is None:
        return None
    return {**{name: None for name in _STATE_FIELDS[state_key]}, **value}


def status_patch(status: Obj) -> dict[str, Any]:
    """A strategic-merge patch body for ``status``: container ``state``/``lastState`` maps get
    explicit nulls for their other keys, because a merge would otherwise keep a stale
    ``waiting`` next to a new ``running``."""
    patched = dict(status)
    # Conditions merge by type: a condition that turned True must drop its old reason and message.
    patched["conditions"] = [
        {"reason": None, "message": None, **condition} for condition in patched.get("conditions") or []
    ]
    for key in ("containerStatuses", "initContainerStatuses"):
        if key not in patched:
            continue
        entries = []
        for entry in patched[key]:
            entry = dict(entry)
            for state_key in ("state", "lastState"):
                state = dict(entry.get(state_key) or {})
                entry[state_key] = {k: _with_nulls(state.get(k), k) for k in _STATE_KEYS}
            entries.append(entry)
        patched[key] = entries
    return {"status": patched}
