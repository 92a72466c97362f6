"""SBOMs: CycloneDX 1.6 and SPDX 2.3 JSON from an image's provenance record and layer.

Unit tests run on hand-made images (a FileTree with a provenance record,
written by the real layer writer); end-to-end tests build curl from this
Debian host and from the shared Rocky RPMs, validate both documents, check
the package set against dpkg / the rpm manifest, recompute every file's
SHA-256 from the layer, and rebuild in another directory for identical bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    SHARED_RPMS,
    assert_one_line_error,
    dpkg_owner,
    have,
    make_repo,
    needs_shared_rpms,
    require_shared_rpms,
    run_cli,
)
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from microcontainer_tool.cli import main
from microcontainer_tool.errors import DigestMismatchError, LayoutError
from microcontainer_tool.model.provenance import RECORD_PATH, add_record, read_record, rpm_facts
from microcontainer_tool.model.tree import Entry, EntryKind, FileTree, HostFile, InlineContent, Provenance
from microcontainer_tool.oci import model as oci
from microcontainer_tool.oci.imageview import open_image
from microcontainer_tool.oci.layout import write_tree_image
from microcontainer_tool.reports.sbom import (
    CYCLONEDX_MEDIA_TYPE,
    FORMATS,
    SPDX_MEDIA_TYPE,
    _normalize,
    read_image_facts,
    render_sbom,
    spdx_license,
)

EPOCH = 1700000000
ELF = b"\x7fELF fake content "

# --- helpers ---------------------------------------------------------------------------------


def validate_cyclonedx(data: bytes) -> dict[str, Any]:
    error = JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode())
    assert error is None, error
    return json.loads(data)


def validate_spdx(data: bytes, tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "doc.spdx.json"
    path.write_bytes(data)
    messages = validate_full_spdx_document(parse_file(str(path)))
    assert not messages, [m.validation_message for m in messages[:5]]
    return json.loads(data)


def layer_hashes(image: Path) -> dict[str, str]:
    """SHA-256 of every regular file of a one-layer OCI layout's layer, read with tarfile alone."""
    index = json.loads((image / "index.json").read_text())
    blobs = image / "blobs" / "sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    assert len(manifest["layers"]) == 1
    data = gzip.decompress((blobs / manifest["layers"][0]["digest"][7:]).read_bytes())
    hashes: dict[str, str] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isreg():
                handle = tar.extractfile(member)
                assert handle is not None
                hashes["/" + member.name] = hashlib.sha256(handle.read()).hexdigest()
            elif member.islnk():
                hashes["/" + member.name] = hashes["/" + member.linkname]
    return hashes


def components(doc: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    return [c for c in doc["components"] if kind is None or (c["type"] == "file") == (kind == "file")]


def prop(component: dict[str, Any], name: str) -> str | None:
    return next((p["value"] for p in component.get("properties", []) if p["name"] == name), None)


def depends(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}


def spdx_relations(doc: dict[str, Any], kind: str) -> set[tuple[str, str]]:
    return {(r["spdxElementId"], r["relatedSpdxElement"]) for r in doc["relationships"]
            if r["relationshipType"] == kind}


# --- a hand-made image -----------------------------------------------------------------------

RPM_A = {"name": "app", "version": "1.0", "release": "2.el9", "epoch": 0, "arch": "x86_64",
         "license": "MIT", "sourcerpm": "app-1.0-2.el9.src.rpm",
         "vendor": "Rocky Enterprise Software Foundation",
         "repo": "baseos"}
RPM_B = {"name": "libfoo", "version": "3.1", "release": "1.el9", "epoch": 1, "arch": "x86_64",
         "license": "GPLv2+ and LGPLv2+", "sourcerpm": "foo-3.1-1.el9.src.rpm",
         "vendor": "Rocky Enterprise Software Foundation", "repo": "appstream"}
RPM_C = {"name": "libc", "version": "2.34", "release": "1.el9", "epoch": 0, "arch": "x86_64",
         "license": "LGPL-2.1-or-later WITH GCC-exception-3.1 OR Apache-2.0", "sourcerpm": "",
         "vendor": "Rocky", "repo": "baseos"}
RPM_REL = {"name": "rocky-release", "version": "9.4", "release": "1.el9", "epoch": 0, "arch": "noarch",
           "license": "BSD-3-Clause", "sourcerpm": "", "vendor": "Rocky", "repo": "baseos"}
UNUSED = {"name": "unused", "version": "1", "release": "1", "epoch": 0, "arch": "x86_64", "license": "MIT",
          "vendor": "Rocky", "repo": "baseos"}
A, B, C, REL = ("rpm:app-1.0-2.el9.x86_64", "rpm:libfoo-1:3.1-1.el9.x86_64", "rpm:libc-2.34-1.el9.x86_64",
                "rpm:rocky-release-9.4-1.el9.noarch")


def _tree(tmp_path: Path) -> FileTree:
    """app (A) needs libfoo (B, through a soname link), both need libc (C); plus unowned files."""
    tree = FileTree()

    def add(path: str, data: bytes, source: str, *why: Provenance) -> None:
        tree.add(Entry(path, EntryKind.FILE, 0o755, InlineContent(data),
                       provenance=tuple(p if p.source else Provenance(p.reason, source, p.kind, p.selector,
                                                                      p.by, p.name, p.rule) for p in why)))

    add("/usr/bin/app", ELF + b"app", A, Provenance("paths", A, "paths", "/usr/bin/app"))
    tree.add(Entry("/usr/lib64/libfoo.so.1", EntryKind.SYMLINK, 0o777, linkname="libfoo.so.1.2",
                   provenance=(Provenance("needed", B, "needed", by="/usr/bin/app", name="libfoo.so.1",
                                          rule="default dirs"),)))
    # libfoo.so.1.2's own reason is a libs: entry; only the link carries the DT_NEEDED edge of app
    add("/usr/lib64/libfoo.so.1.2", ELF + b"foo", B, Provenance("libs", B, "libs", "libfoo.so.1.2"))
    add("/usr/lib64/libc.so.6", ELF + b"libc", C,
        Provenance("needed", C, "needed", by="/usr/bin/app", name="libc.so.6", rule="default dirs"),
        Provenance("needed", C, "needed", by="/usr/lib64/libfoo.so.1.2", name="libc.so.6",
                   rule="default dirs"))
    add("/usr/lib64/ld-linux-x86-64.so.2", ELF + b"ld", C,
        Provenance("interp", C, "interpreter", by="/usr/bin/app"))
    tree.add(Entry("/lib64", EntryKind.SYMLINK, 0o777, linkname="usr/lib64",
                   provenance=(Provenance("interp", C, "interpreter", by="/usr/bin/app"),)))
    add("/usr/lib/os-release", b"ID=rocky\n", REL, Provenance("paths", REL, "paths", "/usr/lib/os-release"))
    add("/etc/app.conf", b"x = 1\n", "project:app.conf", Provenance("files", "project:app.conf", "files",
                                                                     "/etc/app.conf"))
    add("/etc/passwd", b"root:x:0:0::/:/sbin/nologin\n", "generated",
        Provenance("nss", "generated", "generated", "nss"))
    # two names of one host file: the layer writer makes the second a tar hardlink
    host = tmp_path / "shared.dat"
    host.write_bytes(b"shared content\n")
    for path in ("/usr/share/app/a.dat", "/usr/share/app/b.dat"):
        tree.add(Entry(path, EntryKind.FILE, 0o644, HostFile(str(host), host.stat().st_size, identity=(1, 2)),
                       provenance=(Provenance("paths", A, "paths", "/usr/share/app/*"),)))
    tree.add_parents(Provenance("parent", "generated", "generated", "parent directory"))
    return tree


def _packages() -> dict[str, dict[str, Any]]:
    return {A: rpm_facts(RPM_A), B: rpm_facts(RPM_B), C: rpm_facts(RPM_C), REL: rpm_facts(RPM_REL),
            "rpm:unused-1-1.x86_64": rpm_facts(UNUSED)}


def make_image(out: Path, tmp_path: Path, fmt: str | None = None, record: bool = True,
               labels: dict[str, str] | None = None, tree: FileTree | None = None) -> str:
    tree = tree if tree is not None else _tree(tmp_path)
    if record:
        add_record(tree, _packages(), {"arch": "amd64", "from": "packages", "from_image": None,
                                       "parent": None})

    def config(layer: Any) -> dict[str, Any]:
        return oci.image_config(architecture="amd64", diff_ids=[layer.diff_id], created=EPOCH,
                                cmd=["/usr/bin/app"], labels=labels)

    return write_tree_image(str(out), fmt, tree, "gzip", EPOCH, config, "latest", "img").manifest_digest


@pytest.fixture(scope="module")
def hand(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("hand")
    make_image(work / "app", work)
    return work / "app"


def test_media_types() -> None:
    assert FORMATS == {"cyclonedx": CYCLONEDX_MEDIA_TYPE, "spdx": SPDX_MEDIA_TYPE}
    assert CYCLONEDX_MEDIA_TYPE == "application/vnd.cyclonedx+json"
    assert SPDX_MEDIA_TYPE == "application/spdx+json"


def test_cyclonedx_of_a_hand_made_image(hand: Path) -> None:
    data = render_sbom(str(hand), "cyclonedx", EPOCH)
    doc = validate_cyclonedx(data)
    assert data.endswith(b"}\n") and data.startswith(b'{\n  "$schema"')
    with open_image(str(hand)) as view:
        digest = view.manifest_digest
    meta = doc["metadata"]
    assert meta["timestamp"] == "2023-11-14T22:13:20+00:00"
    assert meta["component"]["type"] == "container" and meta["component"]["name"] == "app"
    assert meta["component"]["version"] == digest and meta["component"]["bom-ref"] == "image"
    assert meta["component"]["purl"] == f"pkg:oci/app@{digest}?arch=amd64"
    assert prop(meta["component"], "microcontainer:from") == "packages"
    assert meta["tools"]["components"][0]["name"] == "microcontainer-tool"
    assert doc["serialNumber"].startswith("urn:uuid:") and doc["specVersion"] == "1.6"

    # exactly the packages that contributed files: "unused" is not in the record, so not here
    packages = {c["name"]: c for c in components(doc, "package")}
    assert set(packages) == {"app", "libfoo", "libc", "rocky-release"}
    foo = packages["libfoo"]
    assert foo["type"] == "library" and foo["version"] == "1:3.1-1.el9"
    assert foo["bom-ref"] == foo["purl"] == \
        "pkg:rpm/rocky/libfoo@3.1-1.el9?arch=x86_64&epoch=1&upstream=foo-3.1-1.el9.src.rpm"
    assert foo["licenses"] == [{"license": {"name": "GPLv2+ and LGPLv2+"}}]  # not SPDX: a name
    assert prop(foo, "microcontainer:repo") == "appstream" and prop(foo, "microcontainer:package-id") == B
    assert packages["app"]["licenses"] == [{"license": {"id": "MIT"}}]
    expression = "LGPL-2.1-or-later WITH GCC-exception-3.1 OR Apache-2.0"
    assert packages["libc"]["licenses"] == [{"expression": expression}]
    assert packages["rocky-release"]["type"] == "operating-system"  # it ships os-release

    files = {c["name"]: c for c in components(doc, "file")}
    expected = {p: h for p, h in layer_hashes(hand).items()}
    assert set(files) == set(expected)  # every regular file, hardlinked ones and the record too
    for path, component in files.items():
        assert component["bom-ref"] == f"file:{path}"
        assert component["hashes"] == [{"alg": "SHA-256", "content": expected[path]}]
    assert files["/usr/share/app/b.dat"]["hashes"] == files["/usr/share/app/a.dat"]["hashes"]
    assert prop(files["/usr/bin/app"], "microcontainer:why") == "paths: /usr/bin/app"
    assert prop(files["/usr/bin/app"], "microcontainer:package") == A
    assert prop(files["/usr/lib64/libc.so.6"], "microcontainer:why") == \
        "needed by /usr/bin/app (as libc.so.6, default dirs)"
    assert prop(files["/etc/app.conf"], "microcontainer:package") is None
    assert prop(files["/etc/app.conf"], "microcontainer:source") == "project:app.conf"
    assert prop(files[RECORD_PATH], "microcontainer:why") == "generated: provenance record"

    deps = depends(doc)
    refs = {c["name"]: c["bom-ref"] for c in components(doc, "package")}
    assert sorted(deps["image"]) == sorted(list(refs.values()) + [
        "file:/etc/app.conf", "file:/etc/passwd", f"file:{RECORD_PATH}"])
    # package -> package from ELF edges (app needs libfoo through the soname link, and libc)
    assert sorted(deps[refs["app"]]) == sorted([refs["libfoo"], refs["libc"]])
    assert deps[refs["libfoo"]] == [refs["libc"]]
    assert deps[refs["libc"]] == [] and deps[refs["rocky-release"]] == []
    # file -> file: the link's edge lands on the file it resolves to
    assert deps["file:/usr/bin/app"] == ["file:/usr/lib64/ld-linux-x86-64.so.2", "file:/usr/lib64/libc.so.6",
                                         "file:/usr/lib64/libfoo.so.1.2"]
    assert deps["file:/usr/lib64/libfoo.so.1.2"] == ["file:/usr/lib64/libc.so.6"]


def test_spdx_of_a_hand_made_image(hand: Path, tmp_path: Path) -> None:
    data = render_sbom(str(hand), "spdx", EPOCH)
    doc = validate_spdx(data, tmp_path)
    with open_image(str(hand)) as view:
        digest = view.manifest_digest
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    assert doc["SPDXID"] == "SPDXRef-DOCUMENT" and doc["creationInfo"]["created"] == "2023-11-14T22:13:20Z"
    assert doc["creationInfo"]["creators"] == ["Tool: microcontainer-tool-0.1.0"]
    assert doc["documentNamespace"].startswith("https://") and digest[7:] not in doc["documentNamespace"]
    root, *packages = doc["packages"]
    assert root["SPDXID"] == "SPDXRef-Image" and root["versionInfo"] == digest
    assert root["primaryPackagePurpose"] == "CONTAINER"
    assert root["externalRefs"][0]["referenceLocator"] == f"pkg:oci/app@{digest}?arch=amd64"
    by_name = {p["name"]: p for p in packages}
    assert set(by_name) == {"app", "libfoo", "libc", "rocky-release"}
    assert by_name["app"]["licenseDeclared"] == "MIT"
    assert by_name["libc"]["licenseDeclared"] == "LGPL-2.1-or-later WITH GCC-exception-3.1 OR Apache-2.0"
    foo = by_name["libfoo"]
    assert foo["licenseDeclared"].startswith("LicenseRef-GPLv2-and-LGPLv2-")
    assert {"licenseId": foo["licenseDeclared"], "extractedText": "GPLv2+ and LGPLv2+"}.items() <= \
        next(x for x in doc["hasExtractedLicensingInfos"] if x["licenseId"] == foo["licenseDeclared"]).items()
    assert foo["externalRefs"] == [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                    "referenceLocator": "pkg:rpm/rocky/libfoo@3.1-1.el9?arch=x86_64&epoch=1"
                                                        "&upstream=foo-3.1-1.el9.src.rpm"}]
    assert foo["versionInfo"] == "1:3.1-1.el9" and foo["supplier"] == foo["downloadLocation"] == "NOASSERTION"
    files = {f["fileName"]: f for f in doc["files"]}
    expected = layer_hashes(hand)
    assert set(files) == {"." + p for p in expected}
    raw = {p: (hashlib.sha1(c).hexdigest(), hashlib.sha256(c).hexdigest())
           for p, c in _contents(hand).items()}
    for path, entry in files.items():
        assert entry["checksums"] == [{"algorithm": "SHA1", "checksumValue": raw[path[1:]][0]},
                                      {"algorithm": "SHA256", "checksumValue": expected[path[1:]]}]
    ids = {f["fileName"][1:]: f["SPDXID"] for f in doc["files"]}
    pids = {p["name"]: p["SPDXID"] for p in packages}
    contains = spdx_relations(doc, "CONTAINS")
    assert ("SPDXRef-Image", pids["libfoo"]) in contains
    assert (pids["libfoo"], ids["/usr/lib64/libfoo.so.1.2"]) in contains
    assert ("SPDXRef-Image", ids["/etc/app.conf"]) in contains
    assert ("SPDXRef-Image", ids["/usr/bin/app"]) not in contains  # the package contains it
    depends_on = spdx_relations(doc, "DEPENDS_ON")
    assert (pids["app"], pids["libfoo"]) in depends_on and (pids["libfoo"], pids["libc"]) in depends_on
    assert (ids["/usr/bin/app"], ids["/usr/lib64/libfoo.so.1.2"]) in depends_on
    assert spdx_relations(doc, "DESCRIBES") == {("SPDXRef-DOCUMENT", "SPDXRef-Image")}


def _contents(image: Path) -> dict[str, bytes]:
    with open_image(str(image)) as view, view.open_layer_blob(0) as blob:
        data = gzip.decompress(blob.read())
    out: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar:
            if member.isreg():
                out["/" + member.name] = tar.extractfile(member).read()  # type: ignore[union-attr]
            elif member.islnk():
                out["/" + member.name] = out["/" + member.linkname]
    return out


def test_deterministic_and_stamped_by_epoch_only(hand: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere" / "app"
    other.parent.mkdir()
    assert make_image(other, tmp_path) == read_image_facts(str(hand)).manifest_digest
    for fmt in ("cyclonedx", "spdx"):
        first = render_sbom(str(hand), fmt, EPOCH)
        assert render_sbom(str(hand), fmt, EPOCH) == first
        assert render_sbom(str(other), fmt, EPOCH) == first  # same image elsewhere: same bytes
        later = render_sbom(str(hand), fmt, EPOCH + 86400)
        assert later != first
        assert first.replace(b"2023-11-14T22:13:20", b"2023-11-15T22:13:20") == later


def test_serial_number_follows_the_image(hand: Path, tmp_path: Path) -> None:
    changed = _tree(tmp_path)
    changed.add(Entry("/etc/extra", EntryKind.FILE, 0o644, InlineContent(b"x"),
                      provenance=(Provenance("files", "project:extra", "files", "/etc/extra"),)))
    make_image(tmp_path / "app", tmp_path, tree=changed)
    one = json.loads(render_sbom(str(hand)))
    two = json.loads(render_sbom(str(tmp_path / "app")))
    assert one["serialNumber"] != two["serialNumber"]
    assert json.loads(render_sbom(str(hand), "spdx"))["documentNamespace"] != \
        json.loads(render_sbom(str(tmp_path / "app"), "spdx"))["documentNamespace"]


def test_archives_and_title_label(tmp_path: Path) -> None:
    oci_archive, docker = tmp_path / "app.tar", tmp_path / "dock.tar"
    make_image(oci_archive, tmp_path, labels={"org.opencontainers.image.title": "My App"})
    make_image(docker, tmp_path, fmt="docker-archive")
    one = validate_cyclonedx(render_sbom(str(oci_archive)))
    assert one["metadata"]["component"]["name"] == "My App"
    assert one["metadata"]["component"]["purl"].startswith("pkg:oci/my%20app@sha256:")
    two = validate_cyclonedx(render_sbom(str(docker)))
    assert two["metadata"]["component"]["name"] == "dock"
    assert [c["bom-ref"] for c in one["components"]] == [c["bom-ref"] for c in two["components"]]
    validate_spdx(render_sbom(str(docker), "spdx"), tmp_path)


def test_layout_tag(hand: Path) -> None:
    assert render_sbom(f"{hand}:latest") == render_sbom(str(hand))
    with pytest.raises(LayoutError):
        render_sbom(f"{hand}:nope")


def test_no_record_is_a_one_line_error(tmp_path: Path) -> None:
    make_image(tmp_path / "bare", tmp_path, record=False)
    with pytest.raises(LayoutError, match="no provenance record"):
        render_sbom(str(tmp_path / "bare"))
    proc = run_cli("sbom", str(tmp_path / "bare"))
    assert_one_line_error(proc, "no provenance record", str(tmp_path / "bare"))
    assert proc.stdout == ""
    assert_one_line_error(run_cli("sbom", str(tmp_path / "missing")), "no such image")
    assert_one_line_error(run_cli("sbom", "--format", "spdx", str(tmp_path / "bare")), "no provenance record")


def test_record_and_layer_must_agree(tmp_path: Path) -> None:
    tree = FileTree()
    record = {"schema": "microcontainer-provenance/1", "image": {"arch": "amd64"}, "packages": {},
              "files": {"/usr/bin/ghost": {"kind": "file", "package": None, "source": "generated",
                                           "why": []}}}
    tree.add(Entry(RECORD_PATH, EntryKind.FILE, 0o644, InlineContent(oci.canonical_json(record))))
    tree.add_parents(Provenance("parent"))
    make_image(tmp_path / "ghost", tmp_path, record=False, tree=tree)
    with pytest.raises(LayoutError, match="/usr/bin/ghost, which is not a file of its layer"):
        render_sbom(str(tmp_path / "ghost"))
    tree.add(Entry(RECORD_PATH, EntryKind.FILE, 0o644, InlineContent(b"{not json")), replace_existing=True)
    make_image(tmp_path / "bad", tmp_path, record=False, tree=tree)
    assert_one_line_error(run_cli("sbom", str(tmp_path / "bad")), "is not valid JSON")


def test_corrupt_layer_is_refused(tmp_path: Path) -> None:
    make_image(tmp_path / "app", tmp_path)
    with open_image(str(tmp_path / "app")) as view:
        digest = view.layers[0].digest
    blob = tmp_path / "app/blobs/sha256" / digest[7:]
    data = bytearray(blob.read_bytes())
    # the gzip trailer's CRC: decoding fails, or the digest check does
    data[-6] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises((DigestMismatchError, LayoutError)):
        render_sbom(str(tmp_path / "app"))
    assert_one_line_error(run_cli("sbom", str(tmp_path / "app")))


def test_unknown_format() -> None:
    from microcontainer_tool.errors import SpecError

    with pytest.raises(SpecError, match="unknown SBOM format"):
        render_sbom("/nonexistent", "swid")


def test_paths_are_normalized() -> None:
    assert _normalize("./usr/./bin//curl") == "/usr/bin/curl"
    assert _normalize("/etc/passwd") == "/etc/passwd"
    assert _normalize("usr/../../etc/passwd") is None
    assert _normalize("./") is None


def test_spdx_license_detection() -> None:
    assert spdx_license("MIT") == "MIT"
    assert spdx_license("MIT OR Apache-2.0") == "MIT OR Apache-2.0"
    assert spdx_license("(MIT AND BSD-3-Clause) OR GPL-2.0+") == "(MIT AND BSD-3-Clause) OR GPL-2.0+"
    assert spdx_license("GPL-2.0-or-later WITH Classpath-exception-2.0") == \
        "GPL-2.0-or-later WITH Classpath-exception-2.0"
    for text in ("", "LicenseRef-Custom", "GPLv2+", "MIT and BSD", "mit", "GPL-2", "Public Domain", "MIT OR",
                 "MIT WITH MIT", "(MIT"):
        assert spdx_license(text) is None, text


def test_cli_stdout_file_and_epoch(hand: Path, tmp_path: Path) -> None:
    proc = run_cli("sbom", str(hand), env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == render_sbom(str(hand), "cyclonedx", EPOCH)
    out = tmp_path / "app.spdx.json"
    proc = run_cli("sbom", "--format", "spdx", "-o", str(out), str(hand), env={"SOURCE_DATE_EPOCH": ""})
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr
    assert out.read_bytes() == render_sbom(str(hand), "spdx", 0)
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n]
    assert_one_line_error(run_cli("sbom", str(hand), env={"SOURCE_DATE_EPOCH": "yesterday"}),
                          "SOURCE_DATE_EPOCH")
    text = io.StringIO()
    assert main(["sbom", str(hand)], stdout=text, environ={}) == 0
    assert text.getvalue().encode() == render_sbom(str(hand))


# --- end to end: real builds -----------------------------------------------------------------

debian_host = pytest.mark.skipif(not Path("/var/lib/dpkg/status").is_file() or not have("dpkg-query")
                                 or not Path("/usr/bin/curl").exists(),
                                 reason="needs a Debian host with curl")


def build(spec: Path, out: Path, *extra: str) -> None:
    proc = run_cli("build", "-c", str(spec), "-o", str(out), *extra, env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert proc.returncode == 0, proc.stderr


def check_files(image: Path, doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every regular file of the layer is listed once, with its SHA-256; return them by path."""
    files = {c["name"]: c for c in components(doc, "file")}
    expected = layer_hashes(image)
    assert set(files) == set(expected)
    for path, sha in expected.items():
        assert files[path]["hashes"] == [{"alg": "SHA-256", "content": sha}], path
    return files


@pytest.fixture(scope="module")
def debian_curl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """curl from this host, built twice in different directories."""
    images = []
    for n in range(2):
        work = tmp_path_factory.mktemp(f"curl{n}")
        (work / "spec").mkdir()
        (work / "spec/microimage.yaml").write_text("paths: [/usr/bin/curl]\ncmd: [/usr/bin/curl]\n")
        build(work / "spec", work / "curl")
        images.append(work / "curl")
    return images[0], images[1]


@debian_host
def test_debian_curl(debian_curl: tuple[Path, Path], tmp_path: Path) -> None:
    image, again = debian_curl
    cdx = render_sbom(str(image), "cyclonedx", EPOCH)
    doc = validate_cyclonedx(cdx)
    files = check_files(image, doc)
    spdx = render_sbom(str(image), "spdx", EPOCH)
    validate_spdx(spdx, tmp_path)
    # rebuilt elsewhere: byte-identical SBOMs
    assert render_sbom(str(again), "cyclonedx", EPOCH) == cdx
    assert render_sbom(str(again), "spdx", EPOCH) == spdx

    packages = {c["name"]: c for c in components(doc, "package")}
    owners = {dpkg_owner(p) for p, c in files.items() if prop(c, "microcontainer:package")}
    assert None not in owners
    assert set(packages) == {o.split(":")[0] for o in owners if o}  # exactly dpkg's owners of the files
    for package in packages.values():
        assert package["purl"].startswith(f"pkg:deb/debian/{package['name']}@")
        assert package["version"] in package["purl"].replace("%2B", "+").replace("%3A", ":")
    assert {"curl", "libcurl4", "libc6", "libssl3"} <= set(packages)
    # the ELF graph: curl -> libcurl -> libssl (two levels), and the packages likewise
    deps = depends(doc)
    libcurl = next(p for p in files if "/libcurl.so.4." in p)
    libssl = next(p for p in files if p.endswith("/libssl.so.3"))
    assert f"file:{libcurl}" in deps["file:/usr/bin/curl"]
    assert f"file:{libssl}" in deps[f"file:{libcurl}"]
    assert f"file:{libssl}" not in deps["file:/usr/bin/curl"]
    assert packages["libcurl4"]["bom-ref"] in deps[packages["curl"]["bom-ref"]]
    assert packages["libssl3"]["bom-ref"] in deps[packages["libcurl4"]["bom-ref"]]
    assert packages["curl"]["licenses"] == [{"license": {"id": "curl"}}]  # the DEP-5 "Files: *" license


needs_rpms = needs_shared_rpms


@pytest.fixture(scope="module")
def rocky_curl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """curl from the Rocky RPMs (a file:// repository), built twice in different directories and caches."""
    require_shared_rpms()
    repo = make_repo(tmp_path_factory.mktemp("rocky") / "repo", sorted(SHARED_RPMS.glob("*.rpm")))
    images = []
    for n in range(2):
        work = tmp_path_factory.mktemp(f"rpm{n}")
        (work / "spec").mkdir()
        (work / "spec/microimage.yaml").write_text(
            f"packages: [curl]\nrepos: [{{baseurl: '{repo.as_uri()}/', name: rocky}}]\n"
            "paths: [/usr/bin/curl]\nentrypoint: [/usr/bin/curl]\n")
        build(work / "spec", work / "curl", "--cache-dir", str(work / "cache"))
        images.append(work / "curl")
    return images[0], images[1]


@needs_rpms
def test_rocky_curl(rocky_curl: tuple[Path, Path], tmp_path: Path) -> None:
    image, again = rocky_curl
    cdx = render_sbom(str(image), "cyclonedx", EPOCH)
    doc = validate_cyclonedx(cdx)
    files = check_files(image, doc)
    spdx = render_sbom(str(image), "spdx", EPOCH)
    sdoc = validate_spdx(spdx, tmp_path)
    assert render_sbom(str(again), "cyclonedx", EPOCH) == cdx
    assert render_sbom(str(again), "spdx", EPOCH) == spdx

    # the package set is the provenance record's, and every one of them is in the rpm manifest
    packages = {c["name"]: c for c in components(doc, "package")}
    recorded = set(read_record(str(image))["packages"])
    assert {prop(c, "microcontainer:package-id") for c in packages.values()} == recorded
    assert {(c["name"], c["version"].split(":", 1)[-1]) for c in packages.values()} <= rpm_manifest(image)
    assert {p["name"] for p in sdoc["packages"][1:]} == set(packages)
    assert {"curl", "libcurl", "glibc", "openssl-libs", "zlib", "libnghttp2"} <= set(packages)
    for name, package in packages.items():
        assert package["purl"].startswith(f"pkg:rpm/rocky/{name}@"), package["purl"]
        assert prop(package, "microcontainer:repo") == "rocky"
        assert package.get("licenses"), name  # every RPM header has a License
    assert packages["openssl-libs"]["version"].startswith("1:")
    assert "epoch=1" in packages["openssl-libs"]["purl"]
    deps = depends(doc)
    libcurl = next(p for p in files if p.startswith("/usr/lib64/libcurl.so.4."))
    libssl = next(p for p in files if p.startswith("/usr/lib64/libssl.so.3"))
    assert f"file:{libcurl}" in deps["file:/usr/bin/curl"] and f"file:{libssl}" in deps[f"file:{libcurl}"]
    assert packages["libcurl"]["bom-ref"] in deps[packages["curl"]["bom-ref"]]
    assert packages["openssl-libs"]["bom-ref"] in deps[packages["libcurl"]["bom-ref"]]
    assert packages["glibc"]["bom-ref"] in deps[packages["openssl-libs"]["bom-ref"]]


def rpm_manifest(image: Path) -> set[tuple[str, str]]:
    """(name, version-release) of each package in the image's rpm manifest."""
    manifest = _contents(image)["/var/lib/rpmmanifest/container-manifest-2"].decode()
    return {(f[0], f[1]) for f in (line.split("\t") for line in manifest.splitlines())}


@needs_rpms
def test_rocky_curl_packages_are_the_rpm_manifests(rocky_curl: tuple[Path, Path]) -> None:
    image, _ = rocky_curl
    doc = json.loads(render_sbom(str(image)))
    got = {(c["name"], c["version"].split(":", 1)[-1]) for c in components(doc, "package")}
    assert got == rpm_manifest(image)


def test_build_sbom_side_file_is_the_commands_output(tmp_path: Path) -> None:
    """``build --sbom`` writes what ``sbom`` prints; an attached SBOM does not disturb reading the image."""
    (tmp_path / "spec").mkdir()
    (tmp_path / "spec/microimage.yaml").write_text("paths: [/usr/bin/true]\ncmd: [/usr/bin/true]\n")
    for fmt, suffix in (("cyclonedx", ".cdx.json"), ("spdx", ".spdx.json")):
        build(tmp_path / "spec", tmp_path / "img", "--sbom", fmt)
        side = (tmp_path / ("img" + suffix)).read_bytes()
        assert side == render_sbom(str(tmp_path / "img"), fmt, EPOCH)
        proc = run_cli("sbom", "--format", fmt, str(tmp_path / "img"), env={"SOURCE_DATE_EPOCH": str(EPOCH)})
        assert proc.returncode == 0 and proc.stdout.encode() == side, proc.stderr
