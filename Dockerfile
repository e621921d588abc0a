# syntax=docker/dockerfile:1
#
# One image for both halves of cachewarden:
#   cachewarden operator ...   the kopf operator (the Helm chart runs it)
#   cachewarden runtime ...    the cache runtime pods (CachePolicy spec.runtime; the default command)
#   python -m examples.sample_app   the sample app that embeds the engine (examples/sample_app/k8s)
#
# Build and push (multi-arch, pinning, verification): docs/image.md.
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/cachewarden/cachewarden:0.1.0 --push .
#
# The base image is pinned by tag AND digest: the tag says what it is, the digest makes the build
# reproducible (a tag like 3.12-slim-bookworm is rebuilt upstream every few weeks). The digest is the
# one several public, Renovate-maintained Dockerfiles pin for docker.io/library/python:3.12.7-slim-bookworm
# (Renovate pins the multi-platform index, so the same pin serves amd64 and arm64); it was not
# resolved against the registry here (no registry access): check it with the command below before a
# release. To move to a newer base, replace both (docs/image.md, "Updating the base image"):
#   docker buildx imagetools inspect docker.io/library/python:3.12-slim-bookworm --format '{{json .Manifest.Digest}}'
# or override it for one build with --build-arg PYTHON_IMAGE=python:3.12.X-slim-bookworm@sha256:...
#
# Offline, on a machine with no registry (devcluster/realnode/images.py, docs/image.md "Offline"):
# PYTHON_IMAGE is a Debian base made from packages (python3, python3-venv; python3 is all it needs to
# offer), and pip installs from a wheelhouse given by the PIP_* build arguments of the builder stage.
# That build uses the classic builder (DOCKER_BUILDKIT=0), for which the `# syntax=` line is a comment:
# BuildKit would fetch that frontend from a registry. Nothing here needs BuildKit.
ARG PYTHON_IMAGE=docker.io/library/python:3.12.7-slim-bookworm@sha256:032c52613401895aa3d418a4c563d2d05f993bc3ecc065c8f4e2280978acd249

# ---------------------------------------------------------------------------------------------------
# builder: build the cachewarden wheel from this checkout and install it with its dependencies into a
# self-contained virtual environment. Every dependency ships manylinux wheels for amd64 and arm64
# (hiredis, lz4, orjson, xxhash, uvloop, httptools, cryptography), so no compiler is needed here either.
FROM ${PYTHON_IMAGE} AS builder

# pip reads these from the environment. Unset by default (a build with internet uses PyPI); the
# offline build passes PIP_NO_INDEX=1 and PIP_FIND_LINKS=<the wheelhouse served on loopback>.
ARG PIP_INDEX_URL
ARG PIP_NO_INDEX
ARG PIP_FIND_LINKS

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# python3, not python: Debian's python3 package has no `python` command.
RUN python3 -m venv /opt/cachewarden

WORKDIR /src
# Only what the wheel is built from (pyproject's packages.find + its readme); .dockerignore keeps
# tests, docs, virtual environments and caches out of the build context.
COPY pyproject.toml README.md ./
COPY cache_runtime ./cache_runtime
COPY cache_operator ./cache_operator
COPY devcluster ./devcluster
COPY cachewarden ./cachewarden

# The final image never installs anything, so pip leaves the venv once it is built (setuptools stays
# only if a dependency needs it at run time; Python 3.12's venv does not add it). The venv's pip builds
# the wheel (Debian's python3 has no pip module; the venv's pip comes from python3-venv). The last two
# commands fail the build if the console script, the runtime service or the operator with its kopf
# handlers cannot be imported.
RUN /opt/cachewarden/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/cachewarden/bin/pip install /wheels/cachewarden-*.whl \
 && /opt/cachewarden/bin/pip uninstall --yes pip \
 && /opt/cachewarden/bin/cachewarden --help >/dev/null \
 && /opt/cachewarden/bin/python -c "import cache_runtime.service.runtime_main, cache_operator.main"

# ---------------------------------------------------------------------------------------------------
# final: the same Python base (the venv's interpreter symlinks point into it), the venv, the sample
# app, a non-root user. No compiler, no pip, no build context.
FROM ${PYTHON_IMAGE} AS final

ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="cachewarden" \
      org.opencontainers.image.description="Declarative AI-response caches on Kubernetes: the kopf operator and the two-tier cache runtime in one image." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="https://github.com/cachewarden/cachewarden" \
      org.opencontainers.image.url="https://github.com/cachewarden/cachewarden" \
      org.opencontainers.image.documentation="https://github.com/cachewarden/cachewarden/tree/main/docs" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="cachewarden" \
      org.opencontainers.image.base.name="docker.io/library/python:3.12.7-slim-bookworm"

# 10001 is the user the operator's runtime pods run as (cache_operator/render.py RUNTIME_USER_ID,
# runAsNonRoot): the image's own default matches, so a plain `docker run` is non-root too.
RUN groupadd --system --gid 10001 cachewarden \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cachewarden

COPY --from=builder /opt/cachewarden /opt/cachewarden
# The sample app (python -m examples.sample_app) resolves from the working directory.
WORKDIR /app
COPY examples/sample_app ./examples/sample_app

# The runtime (and the sample app) bind 127.0.0.1 by default, right on a workstation and useless in a
# container: listen on every interface of the container's network namespace instead.
ENV PATH=/opt/cachewarden/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TMPDIR=/tmp \
    CACHEWARDEN_BIND_HOST=0.0.0.0

USER 10001:10001

# 8080: the runtime's HTTP API, probes and metrics (spec.runtime.port's default).
EXPOSE 8080

ENTRYPOINT ["cachewarden"]
CMD ["runtime"]
