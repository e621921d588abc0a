"""Pure rendering of a CachePolicy's children: ConfigMap, token Secret, Deployment, Service.

Data in, dicts out: no Kubernetes client, no clock, no randomness except :func:`new_tokens`. The
handlers call these and apply the result (server-side apply). Every child carries:

- explicit labels (:func:`child_labels`), never the policy's own labels: GitOps tools track objects by
  labels such as ``app.kubernetes.io/instance`` or ``kustomize.toolkit.fluxcd.io/name``, and copying
  them would make Flux/Argo CD claim (and prune) the operator's children;
- an owner reference to the policy (:func:`owner_reference`), controller=true, so deleting the policy
  garbage-collects them. Do not use ``kopf.adopt`` on top: it copies the owner's labels onto children.

Restarts: a config change is pushed live to every pod (``config/apply``) and also lands in the
ConfigMap, so the pod template does NOT carry the config hash; the template's
``cachewarden.io/restart-digest`` annotation covers only what a running process cannot pick up (the
content of the Redis Secrets), and everything else that needs a restart (image, port, resources,
mounts) is in the template itself.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from cache_operator.api.cachepolicy import CachePolicySpec, RuntimeSpec
from cache_operator.api.cachepolicy_status import ActiveOverride
from cache_operator.api.common import API_VERSION, GROUP
from cache_runtime.config import CacheConfig, canonical_json, merge_overrides, resolve_config

# Labels and annotations ---------------------------------------------------------------------------

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_POLICY = f"{GROUP}/policy"
RUNTIME_APP_NAME = "cachewarden-runtime"
MANAGED_BY = "cachewarden"

ANNOTATION_CONFIG_HASH = f"{GROUP}/config-hash"
ANNOTATION_PRESET = f"{GROUP}/preset"
ANNOTATION_RESTART_DIGEST = f"{GROUP}/restart-digest"

# Data keys of the children -------------------------------------------------------------------------

CONFIG_KEY = "config.json"
CONFIG_HASH_KEY = "config-hash"
ADMIN_TOKEN_KEY = "admin-token"
READ_TOKEN_KEY = "read-token"
WRITE_TOKEN_KEY = "write-token"
# admin: the operator (and people running incidents by hand); read and write: applications.
TOKEN_KEYS = (ADMIN_TOKEN_KEY, READ_TOKEN_KEY, WRITE_TOKEN_KEY)
# The runtime's own limits (cache_runtime.service.auth: MIN_TOKEN_LENGTH, MAX_TOKEN_FILE_BYTES; a unit
# test keeps them equal): a shorter token or a larger file is ignored there, so refused here.
MIN_TOKEN_LENGTH = 16
MAX_TOKEN_VALUE_BYTES = 64 * 1024

# Where the runtime container finds its files (absolute pod paths; the devcluster kubelet maps them
# below $DEVCLUSTER_ROOT and the runtime's settings do the same mapping).
CONFIG_DIR = "/etc/cachewarden/config"
TOKENS_DIR = "/etc/cachewarden/tokens"
REDIS_URL_DIR = "/etc/cachewarden/redis-url"
REDIS_PASSWORD_DIR = "/etc/cachewarden/redis-password"
REDIS_CA_DIR = "/etc/cachewarden/redis-ca"
CONFIG_PATH = f"{CONFIG_DIR}/{CONFIG_KEY}"
REDIS_CA_PATH = f"{REDIS_CA_DIR}/ca.crt"

RUNTIME_USER_ID = 10001
CONTAINER_NAME = "runtime"
PORT_NAME = "http"
RESP_PORT_NAME = "resp"
DEFAULT_REQUESTS = {"cpu": "100m", "memory": "128Mi"}
DEFAULT_LIMITS = {"memory": "512Mi"}
# The runtime drains in-flight requests for 20 s after SIGTERM (its --shutdown-grace default).
TERMINATION_GRACE_SECONDS = 30


class PolicyIdentity(Protocol):
    """What renderers need to know about the policy object itself (not its spec)."""

    @property
    def name(self) -> str:
        """metadata.name"""

    @property
    def namespace(self) -> str:
        """metadata.namespace"""

    @property
    def uid(self) -> str:
        """metadata.uid (for the owner reference)"""


# Names ---------------------------------------------------------------------------------------------


def configmap_name(policy_name: str) -> str:
    """Name of the ConfigMap holding the resolved config."""
    return f"{policy_name}-cachewarden-config"


def token_secret_name(policy_name: str) -> str:
    """Name of the Secret holding the admin, read-only and write bearer tokens."""
    return f"{policy_name}-cachewarden-tokens"


def deployment_name(policy_name: str) -> str:
    """Name of the runtime Deployment (runtime mode)."""
    return f"{policy_name}-cachewarden"


def service_name(policy_name: str) -> str:
    """Name of the runtime Service (runtime mode); a DNS label, hence the policy name limit of 51."""
    return f"{policy_name}-cachewarden"


# Labels, selectors, owner --------------------------------------------------------------------------


def child_labels(policy_name: str, component: str = "runtime") -> dict[str, str]:
    """The labels of every child and of the runtime pods; only these, never the policy's own."""
    return {
        LABEL_NAME: RUNTIME_APP_NAME,
        LABEL_INSTANCE: policy_name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_POLICY: policy_name,
    }


def pod_selector_labels(policy_name: str) -> dict[str, str]:
    """The Deployment's (immutable) pod selector and the Service's selector."""
    return {LABEL_NAME: RUNTIME_APP_NAME, LABEL_INSTANCE: policy_name}


def pod_selector_string(policy_name: str) -> str:
    """The runtime pods' selector as a ``labelSelector`` query string."""
    return ",".join(f"{key}={value}" for key, value in pod_selector_labels(policy_name).items())


def owner_reference(policy: PolicyIdentity) -> dict[str, Any]:
    """Controller owner reference to the policy: children are garbage-collected with it."""
    return {"apiVersion": API_VERSION, "kind": "CachePolicy", "name": policy.name, "uid": policy.uid,
            "controller": True, "blockOwnerDeletion": True}


def _metadata(policy: PolicyIdentity, name: str, component: str,
              annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": policy.namespace,
                            "labels": child_labels(policy.name, component),
                            "ownerReferences": [owner_reference(policy)]}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


# Config --------------------------------------------------------------------------------------------


def resolve_policy_config(spec: CachePolicySpec, *, redis_url: str | None = None,
                          override: ActiveOverride | None = None) -> CacheConfig:
    """The engine config a policy's pods run: preset (or the override's) + spec.overrides + health
    thresholds + Redis settings, then the incident override's parameters on top.

    ``redis_url`` replaces ``spec.redis.url`` (the operator may rewrite a Service host to a pod IP where
    Services do not route, as in devcluster). A URL from ``spec.redis.secretRef`` never enters the
    config: the runtime reads it from the mounted Secret (``--redis-url-file``), after hashing.
    Raises ``cache_runtime.config.ConfigError`` naming the field.
    """
    preset = override.preset if override is not None and override.preset else spec.preset
    overrides = spec.engine_overrides()
    if override is not None and override.overrides:
        overrides = merge_overrides(overrides, override.overrides, where="spec.overrides")
    url = redis_url if redis_url is not None else (spec.redis.url if spec.redis is not None else None)
    if (spec.runtime is not None and spec.redis is not None and spec.redis.tls is not None
            and spec.redis.tls.ca_secret_ref is not None):
        overrides = merge_overrides(
            overrides, {"redis": {"tls_ca_file": REDIS_CA_PATH}}, where="spec.overrides"
        )
    return resolve_config(preset, overrides, redis_url=url)


def config_document(config: CacheConfig) -> dict[str, Any]:
    """``{"config": ..., "hash": ...}``: the config file's content and the body of ``config/apply``.

    The public dict carries no secret (the password is a marker or null), so it may live in a
    ConfigMap; the runtime recomputes the hash and rejects a mismatch.
    """
    return {"config": config.public_dict(), "hash": config.config_hash()}


def render_configmap(policy: PolicyIdentity, resolved: CacheConfig) -> dict[str, Any]:
    """The ConfigMap the runtime pods (and selector-mode pods) mount: the resolved config + its hash."""
    config_hash = resolved.config_hash()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(policy, configmap_name(policy.name), "config",
                              {ANNOTATION_CONFIG_HASH: config_hash, ANNOTATION_PRESET: resolved.preset}),
        "data": {
            CONFIG_KEY: canonical_json(config_document(resolved)).decode(),
            CONFIG_HASH_KEY: config_hash,
        },
    }


# Tokens --------------------------------------------------------------------------------------------


class TokenSecretError(ValueError):
    """A value in the policy's token Secret is not a token list; names the key and the line (never the
    token itself: the message goes to logs and Events)."""

    def __init__(self, key: str, line: int | None, problem: str, secret: str | None = None) -> None:
        self.key = key
        self.line = line
        self.problem = problem
        where = f"data[{key!r}]" if line is None else f"data[{key!r}] line {line}"
        if secret:
            where = f"Secret {secret} {where}"
        super().__init__(f"{where}: {problem}; accepted: one token per line (new first, old after it "
                         f"during a rotation), each at least {MIN_TOKEN_LENGTH} visible ASCII characters "
                         "without whitespace")


class TokenSet(dict[str, str]):
    """A policy's tokens: ``tokens[key]`` is the one token a client presents for ``key`` (the first
    line of the Secret's value: the operator authenticates with ``tokens[ADMIN_TOKEN_KEY]``), and
    ``tokens.stored[key]`` the Secret's whole value, byte for byte (every line: new and old during a
    rotation), which :func:`render_token_secret` writes back so drift repair never cuts an overlap
    short. ``generated`` names the keys made by this operator because the Secret lacked them."""

    def __init__(self, stored: Mapping[str, str], generated: frozenset[str] = frozenset()) -> None:
        super().__init__({key: token_lines(key, value)[0] for key, value in stored.items()})
        self.stored: dict[str, str] = dict(stored)
        self.generated = generated


def token_lines(key: str, value: str) -> tuple[str, ...]:
    """The tokens of one token-Secret value: every non-blank line, stripped, the first being the one
    clients present. Lines are split and stripped exactly as the runtime's ``TokenFile`` reads the
    mounted file (bytes: ``\\n``, ``\\r\\n`` or ``\\r`` end a line; ASCII whitespace is stripped).

    Raises :class:`TokenSecretError` naming ``key`` and the line number (1-based, blank lines counted)
    for a line that is not one token of at least ``MIN_TOKEN_LENGTH`` visible ASCII characters, for
    a value without any token, and for a value the runtime would not read (over
    ``MAX_TOKEN_VALUE_BYTES``). A bad line is never dropped: the runtime would ignore it, and a
    client holding it would be refused with no hint why.
    """
    raw = value.encode()
    if len(raw) > MAX_TOKEN_VALUE_BYTES:
        raise TokenSecretError(key, None, f"{len(raw)} bytes, over the runtime's limit of "
                                          f"{MAX_TOKEN_VALUE_BYTES}")
    tokens = []
    for number, line in enumerate(raw.splitlines(), start=1):
        token = line.strip()
        if not token:
            continue
        if any(byte in b" \t\x0b\x0c" for byte in token):
            raise TokenSecretError(key, number, "whitespace inside the line")
        if any(byte < 0x21 or byte > 0x7E for byte in token):
            raise TokenSecretError(key, number, "a character outside visible ASCII")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokenSecretError(key, number, f"a token of {len(token)} characters")
        tokens.append(token.decode())
    if not tokens:
        raise TokenSecretError(key, None, "no token")
    return tuple(tokens)


def new_token() -> str:
    """One fresh random token (256 bits, URL-safe base64)."""
    return secrets.token_urlsafe(32)


def new_tokens() -> TokenSet:
    """Fresh random admin, read-only and write tokens (256 bits each)."""
    return TokenSet({key: new_token() for key in TOKEN_KEYS}, frozenset(TOKEN_KEYS))


def tokens_from_secret(secret: Mapping[str, Any] | None,
                       generate: Callable[[], str] = new_token) -> TokenSet | None:
    """The tokens of an existing token Secret, or None when there is no Secret (then the caller makes
    all of them with :func:`new_tokens`).

    A key the Secret lacks, or whose value is empty, gets a new token from ``generate`` (a Secret
    written before the write token existed gains one on the next apply); every other value is kept
    whole, so neither the tokens clients hold nor a rotation's second line are touched. A value that
    is not a token list raises :class:`TokenSecretError` (a :class:`ValueError`) naming the key and
    line: the operator does not guess, and never replaces a token someone may be using.
    """
    if secret is None:
        return None
    meta = secret.get("metadata") or {}
    name = f"{meta.get('namespace', '?')}/{meta['name']}" if meta.get("name") else None
    data = secret.get("data") or {}
    stored: dict[str, str] = {}
    generated: set[str] = set()
    for key in TOKEN_KEYS:
        raw = data.get(key)
        if raw is None:
            value = ""
        elif not isinstance(raw, str):
            raise TokenSecretError(key, None, f"a {type(raw).__name__}, not base64 text", name)
        else:
            try:
                value = base64.b64decode(raw, validate=True).decode()
            except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
                problem = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not base64"
                raise TokenSecretError(key, None, problem, name) from None
        if not value.strip():
            stored[key] = generate()
            generated.add(key)
            continue
        try:
            token_lines(key, value)
        except TokenSecretError as exc:
            raise TokenSecretError(key, exc.line, exc.problem, name) from None
        stored[key] = value
    return TokenSet(stored, frozenset(generated))


def render_token_secret(policy: PolicyIdentity, tokens: Mapping[str, str]) -> dict[str, Any]:
    """The Secret with the runtime's bearer tokens (keys ``admin-token``, ``read-token`` and
    ``write-token``). For a :class:`TokenSet` the stored values are written as they were read (every
    line, byte for byte); plain mappings hold one token per key. Every value is checked with
    :func:`token_lines` (:class:`TokenSecretError` names the key and line)."""
    values = tokens.stored if isinstance(tokens, TokenSet) else tokens
    for key in TOKEN_KEYS:
        value = values.get(key)
        if not isinstance(value, str):
            raise TokenSecretError(key, None, "missing")
        token_lines(key, value)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": _metadata(policy, token_secret_name(policy.name), "tokens"),
        "data": {key: base64.b64encode(values[key].encode()).decode() for key in TOKEN_KEYS},
    }


# Deployment and Service ----------------------------------------------------------------------------


def referenced_secrets(spec: CachePolicySpec) -> list[str]:
    """Names of the user's Secrets the runtime pods mount (Redis URL, password, CA), sorted, unique."""
    if spec.redis is None:
        return []
    refs = [spec.redis.secret_ref, spec.redis.password_secret_ref,
            spec.redis.tls.ca_secret_ref if spec.redis.tls is not None else None]
    return sorted({ref.name for ref in refs if ref is not None})


def restart_digest(secret_data: Mapping[str, Mapping[str, str] | None]) -> str:
    """Digest of the referenced Secrets' content (name -> data, None when missing).

    A running runtime keeps its Redis connections, so a rotated URL, password or CA needs a restart;
    this digest in the pod template makes the Deployment roll when (and only when) they change.
    """
    canonical = {name: dict(data) if data is not None else None for name, data in secret_data.items()}
    return hashlib.sha256(canonical_json(canonical)).hexdigest()[:16]


def runtime_args(spec: CachePolicySpec, runtime: RuntimeSpec) -> list[str]:
    """Arguments of ``cachewarden runtime`` in the container (flags of cache_runtime.service)."""
    args = ["runtime", "--port", str(runtime.port), "--config-path", CONFIG_PATH,
            "--admin-token-file", f"{TOKENS_DIR}/{ADMIN_TOKEN_KEY}",
            "--read-token-file", f"{TOKENS_DIR}/{READ_TOKEN_KEY}",
            "--write-token-file", f"{TOKENS_DIR}/{WRITE_TOKEN_KEY}"]
    if spec.redis is not None and spec.redis.secret_ref is not None:
        args += ["--redis-url-file", f"{REDIS_URL_DIR}/url"]
    if spec.redis is not None and spec.redis.password_secret_ref is not None:
        args += ["--redis-password-file", f"{REDIS_PASSWORD_DIR}/password"]
    if runtime.resp_port is not None:
        args += ["--resp-port", str(runtime.resp_port)]
    return args


def _volumes(policy: PolicyIdentity, spec: CachePolicySpec
             ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    volumes: list[dict[str, Any]] = [
        {"name": "config", "configMap": {"name": configmap_name(policy.name), "defaultMode": 0o444}},
        {"name": "tokens", "secret": {"secretName": token_secret_name(policy.name), "defaultMode": 0o440}},
        # readOnlyRootFilesystem: the runtime's only scratch space (TMPDIR).
        {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        {"name": "tokens", "mountPath": TOKENS_DIR, "readOnly": True},
        {"name": "tmp", "mountPath": "/tmp"},
    ]
    redis = spec.redis
    if redis is not None:
        singles = [("redis-url", redis.secret_ref, REDIS_URL_DIR, "url"),
                   ("redis-password", redis.password_secret_ref, REDIS_PASSWORD_DIR, "password"),
                   ("redis-ca", redis.tls.ca_secret_ref if redis.tls is not None else None, REDIS_CA_DIR,
                    "ca.crt")]
        for volume, ref, directory, file_name in singles:
            if ref is None:
                continue
            items = [{"key": ref.key, "path": file_name}]
            volumes.append({"name": volume,
                            "secret": {"secretName": ref.name, "defaultMode": 0o440, "items": items}})
            mounts.append({"name": volume, "mountPath": directory, "readOnly": True})
    return volumes, mounts


def _probe(path: str, period: int, failures: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT_NAME}, "periodSeconds": period,
            "timeoutSeconds": 2, "failureThreshold": failures}


def _ports(runtime: RuntimeSpec, field: str) -> list[dict[str, Any]]:
    """The HTTP port, and the Redis-protocol port when set (``field``: containerPort or port)."""
    ports: list[dict[str, Any]] = [{"name": PORT_NAME, field: runtime.port, "protocol": "TCP"}]
    if runtime.resp_port is not None:
        ports.append({"name": RESP_PORT_NAME, field: runtime.resp_port, "protocol": "TCP"})
    return ports


def render_deployment(policy: PolicyIdentity, spec: CachePolicySpec,
                      restart_digest_value: str | None = None) -> dict[str, Any]:
    """The runtime Deployment (runtime mode only): hardened, probed, config and tokens mounted.

    ``restart_digest_value`` is :func:`restart_digest` of the referenced Secrets (None when there are
    none or they are unknown); it goes into the pod template so a credentials rotation rolls the pods.
    """
    runtime = spec.runtime
    if runtime is None:
        raise ValueError("spec.runtime: a Deployment is rendered only for runtime mode (spec.runtime set)")
    volumes, mounts = _volumes(policy, spec)
    given = runtime.resources
    requests = given.requests if given is not None and given.requests is not None else DEFAULT_REQUESTS
    limits = given.limits if given is not None and given.limits is not None else DEFAULT_LIMITS
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": runtime.image,
        "imagePullPolicy": runtime.image_pull_policy,
        "command": ["cachewarden"],
        "args": runtime_args(spec, runtime),
        # Bind every interface of the pod (the devcluster kubelet replaces this with the pod's own
        # loopback address, which is what it needs there).
        "env": [{"name": "CACHEWARDEN_BIND_HOST", "value": "0.0.0.0"},
                {"name": "TMPDIR", "value": "/tmp"}],
        "ports": _ports(runtime, "containerPort"),
        "startupProbe": _probe("/healthz", 1, 60),
        "readinessProbe": _probe("/readyz", 3, 2),
        "livenessProbe": _probe("/healthz", 10, 3),
        "resources": {"requests": dict(requests), "limits": dict(limits)},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_USER_ID,
            "runAsGroup": RUNTIME_USER_ID,
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    }
    annotations = dict(runtime.pod_annotations or {})
    annotations[ANNOTATION_RESTART_DIGEST] = restart_digest_value or "none"
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        # The runtime never calls the API server.
        "automountServiceAccountToken": False,
        # Service links would inject e.g. CACHEWARDEN_PORT=tcp://... for a Service named
        # "cachewarden", which the runtime reads as its own --port setting.
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNTIME_USER_ID,
            "runAsGroup": RUNTIME_USER_ID,
            "fsGroup": RUNTIME_USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if runtime.service_account_name:
        pod_spec["serviceAccountName"] = runtime.service_account_name
    if runtime.node_selector:
        pod_spec["nodeSelector"] = dict(runtime.node_selector)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(policy, deployment_name(policy.name), "runtime"),
        "spec": {
            "replicas": runtime.replicas,
            "selector": {"matchLabels": pod_selector_labels(policy.name)},
            # Never drop below the desired count: a lost pod is a cold L1.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "revisionHistoryLimit": 3,
            "template": {
                "metadata": {"labels": child_labels(policy.name), "annotations": annotations},
                "spec": pod_spec,
            },
        },
    }


def render_service(policy: PolicyIdentity, spec: CachePolicySpec) -> dict[str, Any]:
    """The ClusterIP Service in front of the runtime pods (runtime mode only)."""
    runtime = spec.runtime
    if runtime is None:
        raise ValueError("spec.runtime: a Service is rendered only for runtime mode (spec.runtime set)")
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(policy, service_name(policy.name), "runtime"),
        "spec": {
            "type": "ClusterIP",
            "selector": pod_selector_labels(policy.name),
            "ports": [{**port, "targetPort": port["name"]} for port in _ports(runtime, "port")],
        },
    }


def render_children(policy: PolicyIdentity, spec: CachePolicySpec, resolved: CacheConfig,
                    tokens: Mapping[str, str], restart_digest_value: str | None = None
                    ) -> list[dict[str, Any]]:
    """Every child in apply order: Secret and ConfigMap first (the pods mount them), then Deployment
    and Service in runtime mode. Selector mode gets only the Secret and ConfigMap (the application's
    pods mount them themselves)."""
    children = [render_token_secret(policy, tokens), render_configmap(policy, resolved)]
    if spec.runtime is not None:
        children += [render_deployment(policy, spec, restart_digest_value), render_service(policy, spec)]
    return children


def stale_children(spec: CachePolicySpec) -> Sequence[tuple[str, str]]:
    """(apiVersion, kind) of runtime-mode children to delete when the policy is in selector mode."""
    return [] if spec.runtime is not None else [("apps/v1", "Deployment"), ("v1", "Service")]
