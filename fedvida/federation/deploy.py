"""Deployment over gRPC: TLS certificates, SuperNode keys, and the Flower commands to run.

flwr 1.39: the Fleet API (SuperNode <-> SuperLink) is gRPC, the Control API (``flwr run`` <->
SuperLink) is HTTP(S). Secure by default:

* TLS: a private CA signs the SuperLink's certificate (SAN ``127.0.0.1``/``localhost`` plus any
  host given); the SuperLink gets ``--ssl-ca-certfile/--ssl-certfile/--ssl-keyfile``, every
  SuperNode ``--root-certificates ca.crt``, the ``flwr`` connection ``root-certificates``.
* SuperNode authentication: the SuperLink runs with ``--enable-supernode-auth``; each SuperNode
  has an EC key pair (NIST P-384, OpenSSH format), its public key is registered with
  ``flwr supernode register node_K.pub <connection>`` and the node starts with
  ``--auth-supernode-private-key node_K.key``. An unregistered node is refused.

``--insecure`` (no TLS, no authentication) exists only as an explicit flag.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class CertFiles:
    """Where `write_certificates` put the TLS material."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedvida"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    os.chmod(path, 0o600)


def write_certificates(out: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS,
                       days: int = 365) -> CertFiles:
    """Create a CA and a SuperLink certificate signed by it (SAN: ``hosts``).

    Parameters
    ----------
    out
        Folder for ``ca.crt``, ``ca.key``, ``server.pem``, ``server.key``.
    hosts
        IP addresses and DNS names the SuperLink is reached at.
    days
        Validity.
    """
    out.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(_name("fedvida CA")).issuer_name(_name("fedvida CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP384R1())
    cert = (
        x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    files = CertFiles(out / "ca.crt", out / "server.pem", out / "server.key")
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    _write_private(out / "ca.key", ca_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    files.server_cert.write_bytes(cert.public_bytes(pem))
    _write_private(files.server_key, key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return files


def write_node_keys(out: Path, count: int) -> list[tuple[Path, Path]]:
    """Create SuperNode authentication key pairs ``node_K.key`` / ``node_K.pub`` (K < count)."""
    out.mkdir(parents=True, exist_ok=True)
    pairs = []
    for k in range(count):
        key = ec.generate_private_key(ec.SECP384R1())
        private, public = out / f"node_{k}.key", out / f"node_{k}.pub"
        _write_private(private, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption()))
        public.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n")
        pairs.append((private, public))
    return pairs


def write_connection(flwr_home: Path, name: str, address: str, ca_cert: Path | None) -> Path:
    """Add/replace the ``[superlink.<name>]`` connection in ``$FLWR_HOME/config.toml``.

    ``ca_cert`` None means an insecure (plain HTTP) connection.
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    kept: list[str] = []
    skip = False
    for line in (path.read_text().splitlines() if path.is_file() else []):
        if line.strip().startswith("["):
            skip = line.strip() == f"[superlink.{name}]"
        if not skip:
            kept.append(line)
    if not any(ln.strip() == "[superlink]" for ln in kept):
        kept = ["[superlink]", f'default = "{name}"', "", *kept]
    path.write_text("\n".join([*kept, "", *connection_block(name, address, ca_cert)]) + "\n")
    return path


def connection_block(name: str, address: str, ca_cert: Path | None) -> list[str]:
    """The ``[superlink.NAME]`` table of a connection (lines)."""
    block = [f"[superlink.{name}]", f'address = "{address}"']
    if ca_cert is None:
        block.append("insecure = true")
    else:
        block.append(f'root-certificates = "{Path(ca_cert).resolve()}"')
    return block


def connection_text(name: str, address: str, ca_cert: Path | None) -> str:
    """What `write_connection` would add to a config.toml (for ``--print``)."""
    return "\n".join(connection_block(name, address, ca_cert))


def superlink_command(
    certs: Path | None, *, host: str = "127.0.0.1", control_port: int = 8000,
    fleet: str = "127.0.0.1:9092", node_auth: bool = True, database: Path | None = None,
    simulation: bool = False,
) -> list[str]:
    """``flower-superlink`` with TLS from ``certs`` (None: ``--insecure``) and node auth.

    ``simulation``: a SuperLink that runs each ``flwr run`` as a simulation (virtual SuperNodes
    in Ray, ``--federation-config`` sets their number and resources) instead of waiting for
    real SuperNodes.
    """
    cmd = ["flower-superlink", "--disable-runtime-dependency-installation",
           "--host", host, "--port", str(control_port), "--fleet-api-address", fleet]
    if simulation:
        cmd.append("--simulation")
    if certs is None:
        cmd.append("--insecure")
    else:
        cmd += ["--ssl-ca-certfile", str(certs / "ca.crt"), "--ssl-certfile",
                str(certs / "server.pem"), "--ssl-keyfile", str(certs / "server.key")]
        if node_auth:
            cmd.append("--enable-supernode-auth")
    if database is not None:
        cmd += ["--database", str(database)]
    return cmd


def node_config_text(partition: int, data_dir: Path | None, num_partitions: int | None) -> str:
    """The ``--node-config`` value: partition id and the node's own data folder."""
    parts = [f"partition-id={partition}"]
    if num_partitions is not None:
        parts.append(f"num-partitions={num_partitions}")
    if data_dir is not None:
        parts.append(f'data-dir="{Path(data_dir).resolve()}"')
    return " ".join(parts)


def supernode_command(
    partition: int, *, superlink: str = "127.0.0.1:9092", port: int = 9094,
    data_dir: Path | None = None, ca_cert: Path | None = None, auth_key: Path | None = None,
    num_partitions: int | None = None,
) -> list[str]:
    """``flower-supernode`` for one partition (``ca_cert`` None: ``--insecure``)."""
    cmd = ["flower-supernode", "--superlink", superlink, "--port", str(port),
           "--node-config", node_config_text(partition, data_dir, num_partitions)]
    if ca_cert is None:
        cmd.append("--insecure")
    else:
        cmd += ["--root-certificates", str(ca_cert)]
    if auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(auth_key)]
    return cmd


def register_command(public_key: Path, connection: str) -> list[str]:
    """``flwr supernode register`` of a node's public key with the SuperLink."""
    return ["flwr", "supernode", "register", str(public_key), connection]


def run_command(connection: str, config_path: Path, overrides: list[str] | None = None,
                app_dir: Path = Path("."), stream: bool = True,
                federation_config: str | None = None) -> list[str]:
    """``flwr run`` of this project's app with the fedvida config path and overrides.

    ``federation_config``: the ``--federation-config`` of a simulation connection
    (`fedvida.federation.runner.federation_config`: number of virtual SuperNodes, Ray
    resources).
    """
    run_config = f"config-path='{config_path}'"
    if overrides:
        run_config += " overrides='" + ";".join(overrides) + "'"
    cmd = ["flwr", "run", str(app_dir), connection, "--run-config", run_config]
    if federation_config:
        cmd += ["--federation-config", federation_config]
    if stream:
        cmd.append("--stream")
    return cmd


def shell(cmd: list[str]) -> str:
    """A command as one copy-pasteable shell line (an argument holding single quotes, such as
    ``--run-config "config-path='x.yaml'"``, is double-quoted when that needs no escapes)."""
    return " ".join(_quote(c) for c in cmd)


def _quote(arg: str) -> str:
    if "'" in arg and not any(c in arg for c in '"$`\\!'):
        return f'"{arg}"'
    return shlex.quote(arg)
