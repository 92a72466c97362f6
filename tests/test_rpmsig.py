"""OpenPGP signature checks of RPM packages (``gpgkey``) against real artefacts.

Keys are made by ``gpg`` in a throwaway ``GNUPGHOME`` (RSA 2048, ed25519, and
an ed25519 certification key with an RSA signing subkey); a package is built
with ``rpmbuild`` and signed by ``rpmsign --addsign`` with each of them. The
oracle for the verdicts is ``rpmkeys --checksig`` with a temporary rpm
database. Rocky Linux 9 packages are checked against the Rocky key shipped in
their own ``rocky-gpg-keys`` package, and against our key ("unknown key").

Packages as rpm < 4.14 made them (CentOS/RHEL 7, Amazon Linux 2) cannot be
downloaded here; they are made from a built one by renaming its payload digest
tags away (:func:`without_payload_digest`) and signing it with ``rpmsign
--rpmv3``, which adds the legacy header+payload signature.
CentOS 7's v3 signature packets are written by :func:`with_v3_signatures` with
the RSA secret key exported from ``gpg``; ``rpmkeys`` accepts each of them.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from conftest import SHARED_RPMS, assert_one_line_error, make_repo, require_shared_rpms, run_cli
from rpmbuild_fixtures import build_rpm, have_rpmbuild

from microcontainer_tool.errors import MicrocontainerError, RpmError
from microcontainer_tool.sources.rpm.cpio import extract_rpm
from microcontainer_tool.sources.rpm.signature import KeyRing, load_keys, parse_keys, verify_signature

ROCKY = str(SHARED_RPMS)
ROCKY_KEY_ID = "702d426d350d275d"  # "Rocky Enterprise Software Foundation - Release key 2022"

GPG = shutil.which("gpg")
pytestmark = pytest.mark.skipif(
    not (GPG and shutil.which("rpmsign") and have_rpmbuild()),
    reason="gpg, rpmsign and rpmbuild are needed (apt-get install gnupg rpm)")


def no_fetch(url: str) -> bytes:
    raise AssertionError(f"unexpected fetch of {url}")


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text, text
    return text


class Gpg:
    """A throwaway GnuPG home with no-passphrase keys."""

    def __init__(self, home: Path) -> None:
        home.mkdir(mode=0o700)
        self.home = home
        self.env = dict(os.environ, GNUPGHOME=str(home), LC_ALL="C")

    def run(self, *args: str) -> str:
        return subprocess.run([GPG, "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                               *args], check=True, capture_output=True, text=True,
                              env=self.env).stdout

    def ids(self, uid: str) -> list[tuple[str, str]]:
        """``(kind, key id)`` of the primary key and the subkeys of ``uid``, lowercase."""
        out = self.run("--with-colons", "--list-keys", uid)
        return [(f[0], f[4].lower()) for f in (line.split(":") for line in out.splitlines())
                if f[0] in ("pub", "sub")]

    def new_key(self, uid: str, algo: str, usage: str = "sign") -> str:
        self.run("--quick-gen-key", uid, algo, usage, "never")
        return self.ids(uid)[0][1]

    def add_signing_subkey(self, uid: str, algo: str) -> str:
        fpr = next(line.split(":")[9] for line in self.run("--with-colons", "--list-keys", uid)
                   .splitlines() if line.startswith("fpr"))
        self.run("--quick-add-key", fpr, algo, "sign", "never")
        return next(k for kind, k in self.ids(uid) if kind == "sub")

    def export(self, key: str, dest: Path, armor: bool = True) -> Path:
        dest.write_bytes(subprocess.run(
            [GPG, "--batch", *(["--armor"] if armor else []), "--export", key],
            check=True, capture_output=True, env=self.env).stdout)
        return dest

    def sign(self, rpm: Path, key: str, dest: Path, *extra: str) -> Path:
        shutil.copyfile(rpm, dest)
        subprocess.run(["rpmsign", "--addsign", *extra, "--define", f"_gpg_name {key}",
                        "--define", f"_gpg_path {self.home}", "--define", f"__gpg {GPG}",
                        str(dest)], check=True, capture_output=True, env=self.env,
                       stdin=subprocess.DEVNULL)
        return dest

    def stop(self) -> None:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=self.env, capture_output=True,
                       check=False)


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    """Keys, key files and packages: unsigned and signed by each key."""
    work = tmp_path_factory.mktemp("sig")
    gpg = Gpg(work / "gnupg")
    try:
        rsa = gpg.new_key("RSA Signer <rsa@example.invalid>", "rsa2048")
        ed = gpg.new_key("Ed Signer <ed@example.invalid>", "ed25519")
        gpg.new_key("Sub Signer <sub@example.invalid>", "ed25519", "cert")
        sub = gpg.add_signing_subkey("Sub Signer <sub@example.invalid>", "rsa2048")
        unsigned = build_rpm(work, "signme", files={"/usr/share/signme/data": b"payload\n" * 4096,
                                                    "/etc/signme.conf": b"x=1\n"})
        art: dict[str, Path | str] = {
            "work": work, "rsa": rsa, "ed": ed, "sub": sub, "unsigned": unsigned,
            "rsa.asc": gpg.export(rsa, work / "rsa.asc"),
            "rsa.gpg": gpg.export(rsa, work / "rsa.gpg", armor=False),
            "ed.asc": gpg.export(ed, work / "ed.asc"),
            "sub.asc": gpg.export("Sub Signer", work / "sub.asc"),
            "by-rsa": gpg.sign(unsigned, rsa, work / "by-rsa.rpm"),
            "by-ed": gpg.sign(unsigned, ed, work / "by-ed.rpm"),
            "by-sub": gpg.sign(unsigned, sub + "!", work / "by-sub.rpm"),
            "by-rsa-v3": gpg.sign(unsigned, rsa, work / "by-rsa-v3.rpm", "--rpmv3"),
        }
        legacy = without_payload_digest(unsigned, work / "legacy.rpm")
        art["legacy"] = legacy
        # rpmsign adds a header+payload signature to a package without payload digest even
        # without --rpmv3: remove it to get a header-only signature that does not cover the payload
        signed = gpg.sign(legacy, rsa, work / "by-rsa-legacy-both.rpm")
        art["by-rsa-legacy"] = work / "by-rsa-legacy.rpm"
        art["by-rsa-legacy"].write_bytes(rewrite_signature_header(signed.read_bytes(), {1002: None}))
        art["by-rsa-legacy-v3"] = gpg.sign(legacy, rsa, work / "by-rsa-legacy-v3.rpm", "--rpmv3")
        secret = rsa_secret(gpg, rsa)
        art["centos7-style"] = with_v3_signatures(art["by-rsa-legacy-v3"], secret,
                                                  work / "centos7-style.rpm")
        art["payload-sig-only"] = with_v3_signatures(art["by-rsa-legacy-v3"], secret,
                                                     work / "payload-sig-only.rpm", header_sig=False)
    finally:
        gpg.stop()
    return art


# --------------------------------------------------------------------------- package surgery


def _headers(data: bytes) -> tuple[int, int, int, int]:
    """(signature store start, signature index start, header start, payload start)."""
    nindex, hsize = struct.unpack(">II", data[96 + 8:96 + 16])
    sig_index = 96 + 16
    sig_store = sig_index + 16 * nindex
    header = sig_store + hsize + (-(16 + 16 * nindex + hsize)) % 8
    hn, hs = struct.unpack(">II", data[header + 8:header + 16])
    return sig_store, sig_index, header, header + 16 + 16 * hn + hs


def _sig_entry(data: bytes, tag: int) -> tuple[int, int]:
    """(absolute offset, count) of a signature header tag's data."""
    sig_store, sig_index, _, _ = _headers(data)
    nindex = struct.unpack(">I", data[96 + 8:96 + 12])[0]
    for i in range(nindex):
        t, _, offset, count = struct.unpack(">iIiI", data[sig_index + 16 * i:sig_index + 16 * i + 16])
        if t == tag:
            return sig_store + offset, count
    raise KeyError(tag)


def fix_digests(data: bytearray) -> bytearray:
    """Recompute the header digests (SHA1, SHA256 hex) and the MD5 in the signature header."""
    _, _, header, payload = _headers(bytes(data))
    for tag, algo in ((269, "sha1"), (273, "sha256")):
        at, _ = _sig_entry(bytes(data), tag)
        digest = hashlib.new(algo, bytes(data[header:payload])).hexdigest().encode()
        data[at:at + len(digest)] = digest
    at, _ = _sig_entry(bytes(data), 1004)
    data[at:at + 16] = hashlib.md5(bytes(data[header:])).digest()
    return data


def without_payload_digest(src: Path, dst: Path) -> Path:
    """A package as rpm < 4.14 made them: no PAYLOADDIGEST(ALGO|ALT) tags (renamed away)."""
    data = bytearray(src.read_bytes())
    _, _, header, _ = _headers(bytes(data))
    nindex = struct.unpack(">I", data[header + 8:header + 12])[0]
    renamed = 0
    for i in range(nindex):
        at = header + 16 + 16 * i
        tag = struct.unpack(">i", data[at:at + 4])[0]
        if tag in (5092, 5093, 5097):  # the last tags of the index: order is kept
            data[at:at + 4] = struct.pack(">i", 20000 + tag)
            renamed += 1
    assert renamed == 3
    dst.write_bytes(fix_digests(data))
    return dst


def rsa_secret(gpg: Gpg, key: str) -> tuple[str, int, int]:
    """(key id, n, d) of an unprotected RSA key, from its exported secret key packet."""
    data = subprocess.run([GPG, "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                           "--export-secret-keys", key], check=True, capture_output=True,
                          env=gpg.env).stdout
    first = data[0]
    assert first & 0x80 and not first & 0x40 and (first >> 2) & 0x0F == 5, "a secret key packet"
    size = 1 << (first & 0x03)
    body = data[1 + size:1 + size + int.from_bytes(data[1:1 + size], "big")]
    assert body[0] == 4 and body[5] == 1, "a v4 RSA key"

    def mpis(pos: int, count: int) -> tuple[list[int], int]:
        out = []
        for _ in range(count):
            length = (int.from_bytes(body[pos:pos + 2], "big") + 7) // 8
            out.append(int.from_bytes(body[pos + 2:pos + 2 + length], "big"))
            pos += 2 + length
        return out, pos

    (n, _e), pos = mpis(6, 2)
    assert body[pos] == 0, "not passphrase-protected"
    (d, _p, _q, _u), _ = mpis(pos + 1, 4)
    return key, n, d


def v3_signature(signed: bytes, secret: tuple[str, int, int]) -> bytes:
    """An old-format v3 RSA/SHA256 binary-document signature packet, as CentOS 7 packages carry."""
    key_id, n, d = secret
    created = (1600000000).to_bytes(4, "big")
    digest = hashlib.sha256(signed + b"\x00" + created).digest()
    info = bytes.fromhex("3031300d060960864801650304020105000420") + digest  # PKCS#1 DigestInfo
    size = (n.bit_length() + 7) // 8
    encoded = b"\x00\x01" + b"\xff" * (size - len(info) - 3) + b"\x00" + info
    s = pow(int.from_bytes(encoded, "big"), d, n)
    body = (bytes([3, 5, 0]) + created + bytes.fromhex(key_id) + bytes([1, 8]) + digest[:2]
            + s.bit_length().to_bytes(2, "big") + s.to_bytes((s.bit_length() + 7) // 8, "big"))
    return b"\x89" + len(body).to_bytes(2, "big") + body


def rewrite_signature_header(data: bytes, changes: dict[int, bytes | None]) -> bytes:
    """The package with binary signature tags replaced (``None``: removed); the store is rebuilt."""
    sig_store, sig_index, header, _ = _headers(data)
    nindex, hsize = struct.unpack(">II", data[96 + 8:96 + 16])
    store = data[sig_store:sig_store + hsize]
    entries = [struct.unpack(">iIiI", data[sig_index + 16 * i:sig_index + 16 * i + 16])
               for i in range(nindex)]
    assert entries[0][0] == 62, "the signature region tag comes first"

    def length(kind: int, offset: int, count: int) -> int:
        if kind in (6, 8, 9):  # strings: up to the count-th NUL
            end = offset
            for _ in range(count):
                end = store.index(b"\0", end) + 1
            return end - offset
        return count * {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1}[kind]

    kept = []
    for tag, kind, offset, count in entries[1:]:
        blob = store[offset:offset + length(kind, offset, count)]
        if tag in changes:
            new = changes[tag]
            if new is None:
                continue
            assert kind == 7
            blob, count = new, len(new)
        kept.append((offset, tag, kind, count, blob))
    out = bytearray()
    index = []
    for _, tag, kind, count, blob in sorted(kept):  # the original data order
        out += b"\0" * (-len(out) % {3: 2, 4: 4, 5: 8}.get(kind, 1))
        index.append((tag, kind, len(out), count))
        out += blob
    total = len(kept) + 1
    index.insert(0, (62, 7, len(out), 16))
    out += struct.pack(">iIiI", 62, 7, -16 * total, 16)
    blob = (b"\x8e\xad\xe8\x01\0\0\0\0" + struct.pack(">II", total, len(out))
            + b"".join(struct.pack(">iIiI", *entry) for entry in sorted(index)) + bytes(out))
    return data[:96] + blob + b"\0" * (-len(blob) % 8) + data[header:]


def with_v3_signatures(src: Path, secret: tuple[str, int, int], dst: Path,
                       header_sig: bool = True) -> Path:
    """The package re-signed with v3 packets (RSAHEADER, if ``header_sig``, and header+payload)."""
    data = src.read_bytes()
    _, _, header, payload = _headers(data)
    changes: dict[int, bytes | None] = {
        268: v3_signature(data[header:payload], secret) if header_sig else None,
        1002: v3_signature(data[header:], secret)}
    dst.write_bytes(rewrite_signature_header(data, changes))
    return dst


def tampered(src: Path, dst: Path, where: str) -> Path:
    data = bytearray(src.read_bytes())
    _, _, header, payload = _headers(bytes(data))
    if where == "payload":
        data[payload + (len(data) - payload) // 2] ^= 0x01
    elif where in ("header", "header-fixed"):
        at = data.index(b"test package signme", header, payload)
        data[at:at + 4] = b"TEST"
        if where == "header-fixed":
            fix_digests(data)
    elif where == "signature":
        at, count = _sig_entry(bytes(data), 268)  # RSAHEADER: the OpenPGP signature packet
        data[at + count - 3] ^= 0x01               # inside the last MPI/signature bytes
    dst.write_bytes(data)
    return dst


def rpmkeys_verdict(rpm: Path, key: Path, db: Path) -> str:
    """``OK``, ``NOKEY``, ``BAD`` or ``UNSIGNED`` according to rpm itself."""
    if not db.exists():
        db.mkdir()
        subprocess.run(["rpmkeys", "--dbpath", str(db), "--import", str(key)], check=True,
                       capture_output=True)
    out = subprocess.run(["rpmkeys", "--dbpath", str(db), "--checksig", "-v", str(rpm)],
                         check=False, capture_output=True, text=True).stdout
    sig_lines = [line for line in out.splitlines() if "Signature" in line]
    if any("BAD" in line for line in out.splitlines()):
        return "BAD"
    if not sig_lines:
        return "UNSIGNED"
    if any("NOKEY" in line for line in sig_lines):
        return "NOKEY"
    return "OK"


# --------------------------------------------------------------------------- verification


@pytest.mark.parametrize("signer,keyfile", [("rsa", "rsa.asc"), ("rsa", "rsa.gpg"), ("ed", "ed.asc")])
def test_signed_with_the_right_key(art: dict, signer: str, keyfile: str) -> None:
    keys = load_keys(str(art[keyfile]), no_fetch)
    assert [k.key_id for k in keys.keys] == [art[signer]]
    assert verify_signature(str(art[f"by-{signer}"]), keys) == art[signer]


def test_signing_subkey(art: dict) -> None:
    keys = load_keys(str(art["sub.asc"]), no_fetch)
    assert art["sub"] in keys.keys[0].subkey_ids
    assert verify_signature(str(art["by-sub"]), keys) == art["sub"]


def test_rpmv3_signatures_too(art: dict) -> None:
    """``--rpmv3`` adds a legacy header+payload signature beside the header one."""
    keys = load_keys(str(art["rsa.asc"]), no_fetch)
    assert verify_signature(str(art["by-rsa-v3"]), keys) == art["rsa"]


def test_unsigned(art: dict) -> None:
    keys = load_keys(str(art["rsa.asc"]), no_fetch)
    with pytest.raises(RpmError) as err:
        verify_signature(str(art["unsigned"]), keys)
    assert one_line(err).endswith("signme-1.0-1.x86_64.rpm: not signed")


@pytest.mark.parametrize("package,keyfile,signer", [("by-ed", "rsa.asc", "ed"),
                                                    ("by-rsa", "ed.asc", "rsa"),
                                                    ("by-sub", "rsa.asc", "sub")])
def test_signed_with_another_key(art: dict, package: str, keyfile: str, signer: str) -> None:
    keys = load_keys(str(art[keyfile]), no_fetch)
    with pytest.raises(RpmError) as err:
        verify_signature(str(art[package]), keys)
    assert f"signed with unknown key 0x{art[signer]}" in one_line(err)


@pytest.mark.parametrize("where", ["payload", "header-fixed", "signature"])
def test_tampered_signed_package(art: dict, where: str, tmp_path: Path) -> None:
    bad = tampered(art["by-rsa"], tmp_path / f"{where}.rpm", where)
    keys = load_keys(str(art["rsa.asc"]), no_fetch)
    with pytest.raises(RpmError) as err:
        verify_signature(str(bad), keys)
    assert "bad signature" in one_line(err)
    if where != "payload":
        assert f"by key 0x{art['rsa']}" in one_line(err)
    assert rpmkeys_verdict(bad, art["rsa.asc"], tmp_path / "db") == "BAD"


def test_tampered_header_with_stale_digests(art: dict, tmp_path: Path) -> None:
    bad = tampered(art["by-rsa"], tmp_path / "header.rpm", "header")
    with pytest.raises(RpmError) as err:
        verify_signature(str(bad), load_keys(str(art["rsa.asc"]), no_fetch))
    assert "digest mismatch" in one_line(err)


def test_without_payload_digest(art: dict, tmp_path: Path) -> None:
    """rpm < 4.14 packages: the header signature does not commit to the payload."""
    keys = load_keys(str(art["rsa.asc"]), no_fetch)
    with pytest.raises(RpmError) as err:
        verify_signature(str(art["by-rsa-legacy"]), keys)
    assert "does not cover the payload" in one_line(err)
    assert verify_signature(str(art["by-rsa-legacy"]), keys, header_only_ok=True) == art["rsa"]
    # rpm -K says OK: it does not require the payload to be signed; this tool does
    assert rpmkeys_verdict(art["by-rsa-legacy"], art["rsa.asc"], tmp_path / "db") == "OK"
    with pytest.raises(RpmError, match="not signed"):
        verify_signature(str(art["legacy"]), keys, header_only_ok=True)


LEGACY = ["by-rsa-legacy-v3", "centos7-style", "payload-sig-only"]


@pytest.mark.parametrize("package", LEGACY)
def test_legacy_header_and_payload_signature(art: dict, package: str, tmp_path: Path) -> None:
    """rpm < 4.14 packages: the header+payload signature covers the payload."""
    keys = load_keys(str(art["rsa.asc"]), no_fetch)
    assert verify_signature(str(art[package]), keys) == art["rsa"]
    assert rpmkeys_verdict(art[package], art["rsa.asc"], tmp_path / "db") == "OK"


@pytest.mark.parametrize("package", LEGACY)
def test_legacy_tampered_payload(art: dict, package: str, tmp_path: Path) -> None:
    bad = tampered(art[package], tmp_path / "bad.rpm", "payload")
    with pytest.raises(RpmError) as err:
        verify_signature(str(bad), load_keys(str(art["rsa.asc"]), no_fetch),
                         label="signme-1.0-1.x86_64 (from file:///repo)")
    assert one_line(err) == ("signme-1.0-1.x86_64 (from file:///repo): bad signature by key "
                             f"0x{art['rsa']} (the header and payload are not the signed ones: "
                             "header+payload signature mismatch)")
    assert rpmkeys_verdict(bad, art["rsa.asc"], tmp_path / "db") == "BAD"


def test_legacy_md5_mismatch(art: dict, tmp_path: Path) -> None:
    """The MD5 of header+payload is checked too (here it is the only thing that is wrong)."""
    data = bytearray(Path(art["by-rsa-legacy-v3"]).read_bytes())
    at, _ = _sig_entry(bytes(data), 1004)
    data[at] ^= 0x01
    bad = tmp_path / "md5.rpm"
    bad.write_bytes(data)
    with pytest.raises(RpmError) as err:
        verify_signature(str(bad), load_keys(str(art["rsa.asc"]), no_fetch))
    assert "bad signature: the header and payload are not the signed ones (md5 digest mismatch)" \
        in one_line(err)
    assert rpmkeys_verdict(bad, art["rsa.asc"], tmp_path / "db") == "BAD"


@pytest.mark.parametrize("package", LEGACY)
def test_legacy_with_another_key(art: dict, package: str, tmp_path: Path) -> None:
    with pytest.raises(RpmError) as err:
        verify_signature(str(art[package]), load_keys(str(art["ed.asc"]), no_fetch))
    assert f"signed with unknown key 0x{art['rsa']}" in one_line(err)
    assert rpmkeys_verdict(art[package], art["ed.asc"], tmp_path / "db") == "NOKEY"


def test_verdicts_agree_with_rpmkeys(art: dict, tmp_path: Path) -> None:
    keys = load_keys(str(art["rsa.asc"]), no_fetch)
    rocky = sorted(glob.glob(f"{ROCKY}/*.rpm"))[:1]
    legacy = [art[name] for name in LEGACY]
    bad = [tampered(art[name], tmp_path / f"{name}-bad.rpm", "payload") for name in LEGACY]
    for package in [art["by-rsa"], art["by-ed"], art["by-sub"], art["unsigned"], *rocky,
                    *legacy, *bad]:
        want = rpmkeys_verdict(Path(package), art["rsa.asc"], tmp_path / "db")
        try:
            verify_signature(str(package), keys)
            got = "OK"
        except RpmError as exc:
            got = ("UNSIGNED" if "not signed" in str(exc) else
                   "NOKEY" if "unknown key" in str(exc) else "BAD")
        assert got == want, package


def test_legacy_signed_package_builds_an_image(art: dict, tmp_path: Path) -> None:
    """From a repository with gpgkey: accepted and built; a tampered copy is refused by NEVRA and URL."""
    def build(name: str, package: Path) -> tuple[Path, subprocess.CompletedProcess]:
        repo = make_repo(tmp_path / f"{name}-repo", [package])
        spec = tmp_path / f"{name}-spec"
        spec.mkdir()
        (spec / "microimage.yaml").write_text(
            f"packages: [signme]\narch: x86_64\n"
            f"repos: [{{baseurl: 'file://{repo}', gpgkey: 'file://{art['rsa.asc']}'}}]\n")
        return repo, run_cli("build", "-c", str(spec), "-o", str(tmp_path / f"{name}-image"),
                             "--cache-dir", str(tmp_path / f"{name}-cache"))

    _, proc = build("good", Path(art["centos7-style"]))
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("inspect", "--json", str(tmp_path / "good-image"))
    assert proc.returncode == 0, proc.stderr
    assert "usr/share/signme/data" in {f["path"].lstrip("/") for f in json.loads(proc.stdout)["files"]}

    (tmp_path / "bad").mkdir()
    bad = tampered(Path(art["centos7-style"]), tmp_path / "bad" / "signme-1.0-1.x86_64.rpm", "payload")
    repo, proc = build("bad", bad)
    assert_one_line_error(proc, f"signme-1.0-1.x86_64 (from file://{repo}/): bad signature by key "
                                f"0x{art['rsa']}")
    assert "bad-cache" not in proc.stderr
    assert not (tmp_path / "bad-image").exists()


# --------------------------------------------------------------------------- Rocky Linux


@pytest.fixture(scope="module")
def rocky_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_shared_rpms()
    keys_rpm = glob.glob(f"{ROCKY}/rocky-gpg-keys-*.rpm")
    assert keys_rpm, f"no rocky-gpg-keys package in {ROCKY}"
    dest = tmp_path_factory.mktemp("rocky-keys")
    extract_rpm(keys_rpm[0], str(dest))
    return dest / "etc/pki/rpm-gpg/RPM-GPG-KEY-Rocky-9"


def test_rocky_packages_with_rocky_key(rocky_key: Path) -> None:
    keys = load_keys(f"file://{rocky_key}", no_fetch)
    assert [k.key_id for k in keys.keys] == [ROCKY_KEY_ID]
    packages = sorted(glob.glob(f"{ROCKY}/*.rpm"))
    assert len(packages) > 60
    for package in packages:
        assert verify_signature(package, keys) == ROCKY_KEY_ID, package


def test_rocky_package_with_our_key(art: dict) -> None:
    require_shared_rpms()
    packages = sorted(glob.glob(f"{ROCKY}/curl-*.rpm"))
    assert packages, f"no curl package in {ROCKY}"
    with pytest.raises(RpmError) as err:
        verify_signature(packages[0], load_keys(str(art["rsa.asc"]), no_fetch))
    assert f"signed with unknown key 0x{ROCKY_KEY_ID}" in one_line(err)


def test_rocky_tampered_payload(rocky_key: Path, tmp_path: Path) -> None:
    packages = sorted(glob.glob(f"{ROCKY}/zlib-*.rpm"))
    assert packages, f"no zlib package in {ROCKY}"
    bad = tampered(Path(packages[0]), tmp_path / "zlib.rpm", "payload")
    with pytest.raises(RpmError, match="bad signature: the payload is not the signed one"):
        verify_signature(str(bad), load_keys(str(rocky_key), no_fetch))


# --------------------------------------------------------------------------- key loading


def test_several_sources_and_schemes(art: dict, tmp_path: Path) -> None:
    fetched: list[str] = []

    def fetch(url: str) -> bytes:
        fetched.append(url)
        return Path(art["ed.asc"]).read_bytes()

    source = f"https://keys.example.invalid/ed.asc\n  file://{art['rsa.gpg']}  {art['sub.asc']}"
    keys = load_keys(source, fetch)
    assert fetched == ["https://keys.example.invalid/ed.asc"]
    assert [k.key_id for k in keys.keys][:2] == [art["ed"], art["rsa"]] and len(keys) == 3
    for signer in ("rsa", "ed", "sub"):
        assert verify_signature(str(art[f"by-{signer}"]), keys) == art[signer]
    # the same key twice (armored and binary) is one key
    assert len(load_keys(f"{art['rsa.asc']} {art['rsa.gpg']}", no_fetch)) == 1
    # relative paths are relative to base_dir
    assert len(load_keys("rsa.asc", no_fetch, base_dir=str(art["work"]))) == 1


def test_several_armored_blocks_in_one_file(art: dict, tmp_path: Path) -> None:
    """rpm_rs alone reads only the first block; every block counts here."""
    both = tmp_path / "both.asc"
    both.write_bytes(Path(art["rsa.asc"]).read_bytes() + b"\n" + Path(art["ed.asc"]).read_bytes())
    keys = load_keys(str(both), no_fetch)
    assert {k.key_id for k in keys.keys} == {art["rsa"], art["ed"]}
    assert verify_signature(str(art["by-ed"]), keys) == art["ed"]
    ring = parse_keys(both.read_bytes())
    assert isinstance(ring, KeyRing) and len(ring) == 2


def test_bad_key_sources(art: dict, tmp_path: Path) -> None:
    armored = Path(art["rsa.asc"]).read_bytes()
    lines = armored.split(b"\n")
    crc = next(i for i, line in enumerate(lines) if line.startswith(b"=") and len(line) == 5)
    lines[crc] = b"=AAAA"
    body = next(i for i, line in enumerate(lines) if len(line) == 64)
    flipped = list(lines)
    flipped[body] = lines[body][:10] + (b"B" if lines[body][10:11] != b"B" else b"C") + lines[body][11:]
    cases = {
        "garbage.asc": (b"hello, not a key\n", "not an OpenPGP public key"),
        "empty.asc": (b"", "not an OpenPGP public key"),
        "crc.asc": (b"\n".join(lines), "CRC mismatch"),
        "broken.asc": (b"\n".join(flipped), "gpgkey"),
        "sig.asc": (b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
                    "not a public key"),
        "package.rpm": (Path(art["unsigned"]).read_bytes(), "not an OpenPGP public key"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(RpmError) as err:
            load_keys(str(tmp_path / name), no_fetch)
        assert words in one_line(err), name

    secret = subprocess.run([GPG, "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                             "--armor", "--export-secret-keys", art["rsa"]], check=True,
                            capture_output=True,
                            env=dict(os.environ, GNUPGHOME=str(art["work"] / "gnupg"))).stdout
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], check=False, capture_output=True,
                   env=dict(os.environ, GNUPGHOME=str(art["work"] / "gnupg")))
    (tmp_path / "secret.asc").write_bytes(secret)
    with pytest.raises(RpmError, match="is a private key"):
        load_keys(str(tmp_path / "secret.asc"), no_fetch)

    def failing(url: str) -> bytes:
        raise MicrocontainerError(f"GET {url}: HTTP 404 Not Found")

    for source, words in [("", "gpgkey is empty"), ("   ", "gpgkey is empty"),
                          (str(tmp_path / "missing.asc"), "No such file"),
                          ("ftp://example.invalid/key", "unsupported URL scheme"),
                          ("file://host/etc/key", "must not name a host"),
                          ("https://example.invalid/key", "HTTP 404")]:
        with pytest.raises(RpmError) as err:
            load_keys(source, failing)
        assert words in one_line(err), source
