#!/usr/bin/env python3
"""A client built only from the published WendyOS protocol definitions.

At every run the Python stubs are generated with ``grpc_tools.protoc`` from
the reference ``Proto/`` directory (default
``../shared/reference/wendyos-proto/Proto`` from the repository root) into a
temporary directory; nothing generated is kept or committed. Each invocation
performs ONE step against a plaintext (h2c) target and prints one JSON object
on stdout. TLS, where the server needs it, is done by a hop in front of this
client (socat with OpenSSL 3.5: grpcio's BoringSSL cannot do ML-DSA).

Exit status: 0 on success; 2 when the server answers with a gRPC error (the
status code name and details are printed on stderr and as
``{"grpc_error": {...}}`` on stdout); 3 when the target cannot be reached
within the timeout (``{"unreachable": {...}}``); 1 on usage or local errors.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.resources
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROTO_DIR = REPO_ROOT.parent / "shared" / "reference" / "wendyos-proto" / "Proto"
# wendy_proto::contract::DEV_API_KEY
DEV_API_KEY = "dev-secret-change-me"
# wendy_proto::CERTIFICATE_ERROR_METADATA_KEY (our pre-published trailer).
ERROR_TRAILER = "wendycloud-certificate-error-bin"

CERT_PROTO = "cloud/certificates.proto"
V1 = "wendy/agent/services/v1"
V2 = "wendy/agent/services/v2"
PROVISIONING = {
    "v1": (f"{V1}/wendy_agent_v1_provisioning_service.proto", "response"),
    "v2": (f"{V2}/provisioning_service.proto", "response_type"),
}
AGENT_V1 = f"{V1}/wendy_agent_v1_service.proto"
DEVICE_INFO_V2 = f"{V2}/device_info_service.proto"


class Stubs:
    """The generated modules, imported from a temporary directory."""

    def __init__(self, proto_dir: Path, out: Path) -> None:
        from grpc_tools import protoc

        if not (proto_dir / CERT_PROTO).is_file():
            raise SystemExit(f"published protocol definitions not found in {proto_dir} (no {CERT_PROTO})")
        files = sorted(str(p.relative_to(proto_dir)) for p in proto_dir.rglob("*.proto"))
        wkt = importlib.resources.files("grpc_tools") / "_proto"
        args = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{wkt}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            *files,
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on the published definitions in {proto_dir}")
        sys.path.insert(0, str(out))
        self.proto_dir = proto_dir
        self.files = files

    @staticmethod
    def load(proto: str) -> tuple[Any, Any]:
        """(messages module, grpc module) of one .proto file."""
        base = proto.removesuffix(".proto").replace("/", ".")
        return importlib.import_module(f"{base}_pb2"), importlib.import_module(f"{base}_pb2_grpc")


def unknown_fields(msg: Any, path: str = "") -> list[str]:
    """Paths of fields the published types did not recognise (wire shape drift)."""
    from google.protobuf import unknown_fields as uf

    found = [f"{path}{u.field_number}(wire type {u.wire_type})" for u in uf.UnknownFieldSet(msg)]
    for field, value in msg.ListFields():
        if field.message_type is None or field.message_type.GetOptions().map_entry:
            continue
        values = value if field.is_repeated else [value]
        for v in values:
            found += unknown_fields(v, f"{path}{field.name}.")
    return found


def to_json(msg: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    d = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    d["_unknown_fields"] = unknown_fields(msg)
    return d


def emit(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")


class Client:
    def __init__(self, args: argparse.Namespace, stubs: Stubs) -> None:
        import grpc

        self.args = args
        self.stubs = stubs
        self.channel = grpc.insecure_channel(args.target, options=[("grpc.enable_http_proxy", 0)])
        try:
            grpc.channel_ready_future(self.channel).result(timeout=args.timeout)
        except grpc.FutureTimeoutError:
            self.channel.close()
            print(f"cannot reach {args.target} within {args.timeout}s", file=sys.stderr)
            emit({"unreachable": {"target": args.target, "timeout_seconds": args.timeout}})
            raise SystemExit(3) from None

    def call(self, proto: str, service: str, method: str, request: str, metadata=(), **fields: Any) -> Any:
        pb, grpc_mod = Stubs.load(proto)
        stub = getattr(grpc_mod, f"{service}Stub")(self.channel)
        req = getattr(pb, request)(**fields)
        return getattr(stub, method)(req, timeout=self.args.timeout, metadata=list(metadata))

    def api_key(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.args.api_key}")]


def csr_pem(common_name: str) -> tuple[str, str]:
    """An ECDSA P-256 key and a CSR for it, as existing WendyOS agents make."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem.decode(), csr.public_bytes(serialization.Encoding.PEM).decode()


def same_public_key(cert_pem: str, key_pem: str) -> bool:
    """Whether the issued leaf certifies the key of our CSR."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    return cert.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)


def step(c: Client, a: argparse.Namespace) -> Any:
    svc = "CertificateService"
    if a.step == "pki-ca-bundle":
        r = c.call(CERT_PROTO, svc, "GetCaBundle", "GetCaBundleRequest")
        out = to_json(r)
        out["certificates"] = r.pem_bundle.count("-----BEGIN CERTIFICATE-----")
        return out
    if a.step == "pki-token":
        return to_json(
            c.call(
                CERT_PROTO, svc, "CreateAssetEnrollmentToken", "CreateAssetEnrollmentTokenRequest",
                metadata=c.api_key(), organization_id=a.org, name=a.name, ttl_seconds=a.ttl,
            )
        )
    if a.step == "pki-issue":
        key_pem, csr = csr_pem(a.cn)
        if a.key_out:
            Path(a.key_out).write_text(key_pem)
            os.chmod(a.key_out, 0o600)
        r = c.call(
            CERT_PROTO, svc, "IssueCertificate", "IssueCertificateRequest", pem_csr=csr, enrollment_token=a.token
        )
        out = to_json(r)
        out["has_error"] = r.HasField("error")
        out["has_certificate"] = r.HasField("certificate")
        if r.certificate.pem_certificate:
            out["certificate_key_matches_csr"] = same_public_key(r.certificate.pem_certificate, key_pem)
        return out
    if a.step == "pki-get":
        return to_json(
            c.call(
                CERT_PROTO, svc, "GetCertificate", "GetCertificateRequest", metadata=c.api_key(), certificate_id=a.id
            )
        )
    if a.step == "pki-list":
        fields = {"asset_id": a.asset_id}
        if a.limit is not None:
            fields["limit"] = a.limit
        stream = c.call(
            CERT_PROTO, svc, "ListCertificates", "ListCertificatesRequest", metadata=c.api_key(), **fields
        )
        items = [to_json(m) for m in stream]
        return {"responses": items, "count": len(items)}
    if a.step == "pki-revoke":
        return to_json(
            c.call(
                CERT_PROTO, svc, "RevokeCertificate", "RevokeCertificateRequest",
                metadata=c.api_key(), certificate_id=a.id, reason=a.reason,
            )
        )
    if a.step == "agent-is-provisioned":
        proto, oneof = PROVISIONING[a.version]
        r = c.call(proto, "WendyProvisioningService", "IsProvisioned", "IsProvisionedRequest")
        out = to_json(r)
        out["which"] = r.WhichOneof(oneof)
        return out
    if a.step == "agent-provision":
        proto, _ = PROVISIONING[a.version]
        return to_json(
            c.call(
                proto, "WendyProvisioningService", "StartProvisioning", "StartProvisioningRequest",
                organization_id=a.org, enrollment_token=a.token, cloud_host=a.cloud_host, asset_id=a.asset_id,
            )
        )
    if a.step == "agent-version":
        return to_json(
            c.call(AGENT_V1, "WendyAgentService", "GetAgentVersion", "GetAgentVersionRequest")
        )
    if a.step == "agent-hardware":
        proto, service = (AGENT_V1, "WendyAgentService") if a.version == "v1" else (DEVICE_INFO_V2, "WendyDeviceInfoService")
        return to_json(c.call(proto, service, "ListHardwareCapabilities", "ListHardwareCapabilitiesRequest"))
    if a.step == "pki-metadata":
        r = c.call(CERT_PROTO, svc, "GetCertificateMetadata", "GetCertificateMetadataRequest")
        out = to_json(r)
        out["has_asset_id"] = r.HasField("asset_id")
        out["has_user_id"] = r.HasField("user_id")
        return out
    if a.step == "device-info":
        return to_json(
            c.call(DEVICE_INFO_V2, "WendyDeviceInfoService", "GetDeviceInfo", "GetDeviceInfoRequest")
        )
    raise SystemExit(f"unknown step {a.step}")


def grpc_error(e: Any, stubs: Stubs) -> dict[str, Any]:
    """The status of a failed call; our pre-published error trailer decoded if present."""
    out: dict[str, Any] = {"code": e.code().name, "details": e.details()}
    for key, value in e.trailing_metadata() or ():
        if key == ERROR_TRAILER:
            pb, _ = Stubs.load(CERT_PROTO)
            err = pb.CertificateError()
            err.ParseFromString(value)
            out["trailer_certificate_error"] = to_json(err)
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proto-dir", type=Path, default=Path(os.environ.get("WENDY_PROTO_REFERENCE", DEFAULT_PROTO_DIR)))
    p.add_argument("--target", default="127.0.0.1:50051", help="plaintext h2c address (host:port)")
    p.add_argument("--timeout", type=float, default=20.0, help="deadline of the connection and of the call, seconds")
    p.add_argument(
        "--api-key",
        default=os.environ.get("WENDY_API_KEY", DEV_API_KEY),
        help="sent as `authorization: Bearer` on pki-token, pki-get, pki-list, pki-revoke",
    )
    sub = p.add_subparsers(dest="step", required=True)
    sub.add_parser("protoc", help="only generate the stubs and list the compiled files")
    sub.add_parser("pki-ca-bundle", help="CertificateService/GetCaBundle")
    s = sub.add_parser("pki-token", help="CertificateService/CreateAssetEnrollmentToken (API key)")
    s.add_argument("--org", type=int, default=1)
    s.add_argument("--name", default="published-client-asset")
    s.add_argument("--ttl", type=int, default=600)
    s = sub.add_parser("pki-issue", help="CertificateService/IssueCertificate with an ECDSA P-256 CSR")
    s.add_argument("--token", required=True)
    s.add_argument("--cn", default="wendy-agent")
    s.add_argument("--key-out", help="write the generated private key here (PEM, 0600)")
    s = sub.add_parser("pki-get", help="CertificateService/GetCertificate")
    s.add_argument("--id", type=int, required=True)
    s = sub.add_parser("pki-list", help="CertificateService/ListCertificates (server stream)")
    s.add_argument("--asset-id", type=int, required=True)
    s.add_argument("--limit", type=int)
    s = sub.add_parser("pki-revoke", help="CertificateService/RevokeCertificate")
    s.add_argument("--id", type=int, required=True)
    s.add_argument("--reason", default="published-client test")
    s = sub.add_parser("agent-is-provisioned", help="WendyProvisioningService/IsProvisioned")
    s.add_argument("--version", choices=["v1", "v2"], default="v1")
    s = sub.add_parser("agent-provision", help="WendyProvisioningService/StartProvisioning (stock fields 1-4)")
    s.add_argument("--version", choices=["v1", "v2"], default="v1")
    s.add_argument("--org", type=int, required=True)
    s.add_argument("--token", required=True)
    s.add_argument("--cloud-host", required=True)
    s.add_argument("--asset-id", type=int, required=True)
    sub.add_parser("pki-metadata", help="CertificateService/GetCertificateMetadata (the hop's client certificate)")
    sub.add_parser("agent-version", help="v1 WendyAgentService/GetAgentVersion")
    s = sub.add_parser("agent-hardware", help="ListHardwareCapabilities: v1 WendyAgentService, v2 WendyDeviceInfoService")
    s.add_argument("--version", choices=["v1", "v2"], default="v1")
    sub.add_parser("device-info", help="v2 WendyDeviceInfoService/GetDeviceInfo")
    return p


def main() -> int:
    args = parser().parse_args()
    with tempfile.TemporaryDirectory(prefix="wendy-published-stubs-") as out:
        stubs = Stubs(args.proto_dir.resolve(), Path(out))
        if args.step == "protoc":
            emit({"proto_dir": str(stubs.proto_dir), "files": stubs.files})
            return 0
        import grpc

        client = Client(args, stubs)
        try:
            result = step(client, args)
        except grpc.RpcError as e:
            err = grpc_error(e, stubs)
            print(f"gRPC error from {args.target} ({args.step}): {err['code']}: {err['details']}", file=sys.stderr)
            emit({"grpc_error": err})
            return 2
        finally:
            client.channel.close()
        emit(result)
        return 0


if __name__ == "__main__":
    sys.exit(main())
