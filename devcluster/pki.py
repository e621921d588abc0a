"""The local cluster's PKI: a CA, the API server's serving certificate, client certificates and the
service-account key pair, generated with ``cryptography`` into the cluster's run directory.

Certificates use ECDSA P-256 keys: generating them takes microseconds where RSA takes tens of
milliseconds, and every Kubernetes component accepts them. The service-account signing key is RSA
because that is what the brief asks for and what every token consumer expects (RS256).

Every private key and certificate is written with mode 0600: the run directory is the only place the
cluster's credentials live, and an admin client certificate is as good as root on the cluster.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_SERVICE_CIDR = "10.0.0.0/24"
CLUSTER_DOMAIN = "cluster.local"
# A dev cluster's credentials should outlive any session but not linger for decades; a year keeps
# a long-lived `dev up` run dir usable while limiting what a leaked certificate is worth.
CERTIFICATE_LIFETIME = datetime.timedelta(days=365)
# Backdating absorbs clock skew between the process that signs and the one that verifies.
CLOCK_SKEW_ALLOWANCE = datetime.timedelta(hours=1)
SERVICE_ACCOUNT_KEY_BITS = 2048
FRONT_PROXY_CLIENT_NAME = "front-proxy-client"

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class PkiError(ValueError):
    """A PKI input (service CIDR, names) is invalid."""


@dataclass(frozen=True)
class CertificatePair:
    """Paths of one certificate and its private key (both PEM)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ClusterPki:
    """All credentials of one local cluster, as files in its PKI directory."""

    directory: Path
    ca: CertificatePair
    apiserver: CertificatePair
    admin: CertificatePair
    controller_manager: CertificatePair
    etcd_server: CertificatePair
    etcd_client: CertificatePair
    front_proxy_ca: CertificatePair
    front_proxy_client: CertificatePair
    service_account_private_key: Path
    service_account_public_key: Path

    def files(self) -> list[Path]:
        """Every file of this PKI (used to check that it is complete)."""
        pairs = (
            self.ca, self.apiserver, self.admin, self.controller_manager, self.etcd_server,
            self.etcd_client, self.front_proxy_ca, self.front_proxy_client,
        )
        return [p for pair in pairs for p in (pair.cert, pair.key)] + [
            self.service_account_private_key,
            self.service_account_public_key,
        ]


def first_service_ip(service_cidr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The first usable address of the service CIDR: the ClusterIP of the ``kubernetes`` Service,
    which the API server's serving certificate must name."""
    try:
        network = ipaddress.ip_network(service_cidr, strict=True)
    except ValueError as exc:
        raise PkiError(
            f"service CIDR {service_cidr!r} is not a network address ({exc}); accepted: e.g. '10.0.0.0/24'"
        ) from exc
    if network.num_addresses < 4:
        raise PkiError(f"service CIDR {service_cidr!r} is too small; accepted: a prefix of /30 or wider")
    return network.network_address + 1


def apiserver_dns_names(cluster_domain: str = CLUSTER_DOMAIN) -> list[str]:
    """The DNS names a client may use for the API server, in and outside the cluster."""
    return [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{cluster_domain}",
    ]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _new_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _write_private(path: Path, data: bytes) -> None:
    """Write a credential file readable by its owner only, whatever the umask says."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    # O_CREAT's mode does not apply to a file that already existed.
    os.chmod(path, 0o600)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA certificate and key in memory, able to issue leaf certificates."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str = "cachewarden-dev-ca") -> CertificateAuthority:
        """A new self-signed CA."""
        key = _new_ec_key()
        now = _now()
        name = _name(common_name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
            .not_valid_after(now + CERTIFICATE_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert=cert, key=key)

    @classmethod
    def load(cls, pair: CertificatePair) -> CertificateAuthority:
        """Load a CA written earlier by :meth:`write`."""
        cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
        key = serialization.load_pem_private_key(pair.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise PkiError(f"CA key {pair.key} is a {type(key).__name__}; accepted: an ECDSA key")
        return cls(cert=cert, key=key)

    def write(self, pair: CertificatePair) -> None:
        """Write the CA certificate and key as PEM files (0600)."""
        _write_private(pair.cert, _cert_pem(self.cert))
        _write_private(pair.key, _key_pem(self.key))

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        dns_names: Sequence[str] = (),
        ip_addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address] = (),
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """Issue a leaf certificate for server and/or client authentication."""
        if not (server or client):
            raise PkiError(f"certificate {common_name!r} must be for server or client use (or both)")
        key = _new_ec_key()
        now = _now()
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name, organizations))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW_ALLOWANCE)
            .not_valid_after(now + CERTIFICATE_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
                    content_commitment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )
        alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
        alt_names += [x509.IPAddress(ip) for ip in ip_addresses]
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def issue_to_files(self, pair: CertificatePair, common_name: str, **kwargs: object) -> CertificatePair:
        """Issue a certificate (see :meth:`issue`) and write it and its key to ``pair`` (0600)."""
        cert, key = self.issue(common_name, **kwargs)  # type: ignore[arg-type]
        _write_private(pair.cert, _cert_pem(cert))
        _write_private(pair.key, _key_pem(key))
        return pair


def pki_layout(directory: Path) -> ClusterPki:
    """Where each credential of a cluster lives under ``directory`` (nothing is created)."""

    def pair(stem: str) -> CertificatePair:
        return CertificatePair(cert=directory / f"{stem}.crt", key=directory / f"{stem}.key")

    return ClusterPki(
        directory=directory,
        ca=pair("ca"),
        apiserver=pair("apiserver"),
        admin=pair("admin"),
        controller_manager=pair("kube-controller-manager"),
        etcd_server=pair("etcd-server"),
        etcd_client=pair("apiserver-etcd-client"),
        front_proxy_ca=pair("front-proxy-ca"),
        front_proxy_client=pair("front-proxy-client"),
        service_account_private_key=directory / "service-account.key",
        service_account_public_key=directory / "service-account.pub",
    )


def generate_pki(directory: Path, service_cidr: str = DEFAULT_SERVICE_CIDR) -> ClusterPki:
    """Generate a complete PKI for one cluster into ``directory`` (files 0600, directory 0700)."""
    service_ip = first_service_ip(service_cidr)
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    layout = pki_layout(directory)

    ca = CertificateAuthority.create()
    ca.write(layout.ca)
    ca.issue_to_files(
        layout.apiserver,
        "kube-apiserver",
        server=True,
        dns_names=apiserver_dns_names(),
        ip_addresses=[ipaddress.ip_address("127.0.0.1"), service_ip],
    )
    # system:masters is bound to cluster-admin by the API server's bootstrap RBAC policy.
    ca.issue_to_files(layout.admin, "admin", organizations=["system:masters"], client=True)
    # The bootstrap policy grants system:kube-controller-manager exactly what the controller manager
    # needs, so it runs with its real permissions rather than as an admin.
    ca.issue_to_files(layout.controller_manager, "system:kube-controller-manager", client=True)

    # etcd serves TLS and demands a client certificate: on a shared machine a plain-HTTP etcd would
    # let any local user read Secrets or write objects past the API server's RBAC.
    ca.issue_to_files(
        layout.etcd_server, "etcd", server=True, client=True,
        dns_names=["localhost"], ip_addresses=[ipaddress.ip_address("127.0.0.1")],
    )
    ca.issue_to_files(layout.etcd_client, "kube-apiserver-etcd-client", client=True)

    # The aggregation layer's request-header identity has its own CA: a certificate from the main CA
    # must never be able to assert an arbitrary user through X-Remote-User headers.
    front_proxy_ca = CertificateAuthority.create("cachewarden-dev-front-proxy-ca")
    front_proxy_ca.write(layout.front_proxy_ca)
    front_proxy_ca.issue_to_files(layout.front_proxy_client, FRONT_PROXY_CLIENT_NAME, client=True)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=SERVICE_ACCOUNT_KEY_BITS)
    _write_private(layout.service_account_private_key, _key_pem(sa_key))
    _write_private(
        layout.service_account_public_key,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return layout


def load_or_generate_pki(directory: Path, service_cidr: str = DEFAULT_SERVICE_CIDR) -> ClusterPki:
    """Reuse a complete PKI in ``directory`` (a restarted cluster keeps its identity, so kubeconfigs
    and ServiceAccount tokens issued before stay valid) or generate a new one."""
    layout = pki_layout(directory)
    if all(path.is_file() for path in layout.files()):
        return layout
    return generate_pki(directory, service_cidr)
