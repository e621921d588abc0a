"""The devcluster PKI: what each certificate says, who signed it, file modes, and a real mutual-TLS
handshake with the generated credentials (no API server needed)."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devcluster.pki import (
    CertificateAuthority,
    ClusterPki,
    PkiError,
    apiserver_dns_names,
    first_service_ip,
    generate_pki,
    load_or_generate_pki,
)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return generate_pki(tmp_path_factory.mktemp("pki") / "pki", "10.0.0.0/24")


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def subject(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(oid)]


def usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_every_file_is_private_to_its_owner(pki: ClusterPki) -> None:
    assert stat.S_IMODE(pki.directory.stat().st_mode) == 0o700
    for path in pki.files():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_the_apiserver_certificate_names_every_address_a_client_may_use(pki: ClusterPki) -> None:
    cert = load(pki.apiserver.cert)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    }
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.1"),
    }
    assert usages(cert) == {ExtendedKeyUsageOID.SERVER_AUTH}


@pytest.mark.parametrize(
    ("pair", "common_name", "organizations"),
    [
        ("admin", "admin", ["system:masters"]),
        ("controller_manager", "system:kube-controller-manager", []),
        ("etcd_client", "kube-apiserver-etcd-client", []),
    ],
)
def test_client_certificates_carry_the_identity_rbac_expects(
    pki: ClusterPki, pair: str, common_name: str, organizations: list[str]
) -> None:
    cert = load(getattr(pki, pair).cert)
    assert subject(cert, NameOID.COMMON_NAME) == [common_name]
    assert subject(cert, NameOID.ORGANIZATION_NAME) == organizations
    assert usages(cert) == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_leaves_are_signed_by_the_ca_and_the_front_proxy_has_its_own_ca(pki: ClusterPki) -> None:
    ca = load(pki.ca.cert)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    for pair in (pki.apiserver, pki.admin, pki.controller_manager, pki.etcd_server, pki.etcd_client):
        load(pair.cert).verify_directly_issued_by(ca)
    front_proxy_client = load(pki.front_proxy_client.cert)
    front_proxy_client.verify_directly_issued_by(load(pki.front_proxy_ca.cert))
    with pytest.raises(ValueError, match="issuer"):
        front_proxy_client.verify_directly_issued_by(ca)


def test_the_service_account_key_pair_is_rsa_and_matches(pki: ClusterPki) -> None:
    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(pki.service_account_private_key.read_bytes(), None)
    public = serialization.load_pem_public_key(pki.service_account_public_key.read_bytes())
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    assert isinstance(public, rsa.RSAPublicKey)
    assert private.public_key().public_numbers() == public.public_numbers()


def test_certificate_keys_are_ecdsa(pki: ClusterPki) -> None:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pki.admin.key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)


def test_mutual_tls_handshake_with_the_generated_credentials(pki: ClusterPki) -> None:
    """A server with the apiserver certificate and a client with the admin certificate complete a
    verified handshake under the in-cluster name; the server sees the admin identity."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(pki.apiserver.cert, pki.apiserver.key)
    server_context.load_verify_locations(pki.ca.cert)
    server_context.verify_mode = ssl.CERT_REQUIRED
    client_context = ssl.create_default_context(cafile=str(pki.ca.cert))
    client_context.load_cert_chain(pki.admin.cert, pki.admin.key)

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: dict[str, object] = {}

    def serve() -> None:
        listener.settimeout(10)
        connection, _ = listener.accept()
        with server_context.wrap_socket(connection, server_side=True) as tls:
            seen["peer"] = tls.getpeercert()
            tls.sendall(b"ok")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, client_context.wrap_socket(
            raw, server_hostname="kubernetes.default.svc"
        ) as tls:
            assert tls.recv(2) == b"ok"
    finally:
        thread.join(10)
        listener.close()
    peer = seen["peer"]
    assert isinstance(peer, dict)
    assert (("commonName", "admin"),) in peer["subject"]


def test_a_name_not_in_the_certificate_is_refused(pki: ClusterPki) -> None:
    ca = CertificateAuthority.load(pki.ca)
    cert, _ = ca.issue("other", server=True, dns_names=["other.example"])
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes" not in names.get_values_for_type(x509.DNSName)


def test_an_existing_complete_pki_is_reused_and_an_incomplete_one_regenerated(tmp_path: Path) -> None:
    first = generate_pki(tmp_path / "pki")
    ca_bytes = first.ca.cert.read_bytes()
    assert load_or_generate_pki(tmp_path / "pki").ca.cert.read_bytes() == ca_bytes
    first.admin.key.unlink()
    regenerated = load_or_generate_pki(tmp_path / "pki")
    assert regenerated.admin.key.is_file()
    assert regenerated.ca.cert.read_bytes() != ca_bytes


@pytest.mark.parametrize(
    ("cidr", "expected"),
    [("10.0.0.0/24", "10.0.0.1"), ("10.96.0.0/12", "10.96.0.1"), ("fd00::/108", "fd00::1")],
)
def test_first_service_ip(cidr: str, expected: str) -> None:
    assert first_service_ip(cidr) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    ("cidr", "message"),
    [
        ("10.0.0.1/24", "'10.0.0.1/24' is not a network address"),
        ("not-a-cidr", "'not-a-cidr' is not a network address"),
        ("10.0.0.0/31", "'10.0.0.0/31' is too small"),
    ],
)
def test_a_bad_service_cidr_is_named(cidr: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=message):
        generate_pki(tmp_path / "pki", cidr)
    assert not (tmp_path / "pki").exists()


def test_a_certificate_must_have_a_use() -> None:
    with pytest.raises(PkiError, match="must be for server or client use"):
        CertificateAuthority.create().issue("nobody")


def test_dns_names_follow_the_cluster_domain() -> None:
    assert apiserver_dns_names("corp.internal")[-1] == "kubernetes.default.svc.corp.internal"
