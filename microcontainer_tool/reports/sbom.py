"""Software bills of materials: CycloneDX 1.6 JSON and SPDX 2.3 JSON, from the image alone.

An SBOM is rendered from what the image carries, never from the build
machine: the provenance record (``/var/lib/microcontainer/provenance.json``,
see :mod:`.provenance`) says which package each file came from, why it is
there (``DT_NEEDED``/``PT_INTERP`` edges included) and the packages' facts
(version, license, purl); the layer holding the record is streamed once to
hash every regular file in it (SHA-256, and SHA-1 for SPDX, which requires
it), verifying the layer's digest and ``diff_id`` on the way.

Both documents are deterministic functions of the image and the epoch: the
serial number / document namespace is a UUID derived from the manifest
digest, the timestamp is ``epoch`` (``SOURCE_DATE_EPOCH``), every list is
sorted and the JSON is written with sorted keys. The package set is exactly
the record's packages: those that contributed at least one non-directory
entry to the image.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import posixpath
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from microcontainer_tool import __version__
from microcontainer_tool.errors import LayoutError, SpecError
from microcontainer_tool.model.provenance import MAX_RECORD, RECORD_PATH, describe, parse_record
from microcontainer_tool.oci.imageview import ImageView, open_image
from microcontainer_tool.oci.layer import CHUNK_SIZE
from microcontainer_tool.oci.model import rfc3339

CYCLONEDX_MEDIA_TYPE = "application/vnd.cyclonedx+json"
SPDX_MEDIA_TYPE = "application/spdx+json"
FORMATS = {"cyclonedx": CYCLONEDX_MEDIA_TYPE, "spdx": SPDX_MEDIA_TYPE}
"""Output formats and their media types (the ``artifactType`` of an attached SBOM)."""

TOOL_NAME = "microcontainer-tool"
_UUID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://microcontainer-tool.invalid/sbom")
_SPDX_NAMESPACE = "https://microcontainer-tool.invalid/spdxdocs/"
_OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
_MAX_LINK_HOPS = 40


@dataclass(frozen=True)
class FileFacts:
    """One regular file of the image's layer, hashed.

    Attributes:
        path: absolute, normalized image path.
        size: content length in bytes.
        sha256: hex digest.
        sha1: hex digest, or ``""`` when not asked for.
        package: the owning package id (a key of the record's packages), or ``None``.
        source: where the file came from (``rpm:...``, ``project:...``, ``generated`` ...).
        why: the record's reasons, first one first.
    """

    path: str
    size: int
    sha256: str
    sha1: str
    package: str | None
    source: str
    why: tuple[Mapping[str, Any], ...]


@dataclass
class ImageFacts:
    """What an SBOM says about one image, read from the image itself.

    Attributes:
        name: the image's name (its title label, else the path's base name).
        manifest_digest: ``sha256:...`` of the image manifest.
        arch: the image's OCI architecture.
        record: the provenance record.
        packages: package id -> facts (the record's, exactly).
        files: path -> facts of every regular file in the record's layer, sorted by path.
        edges: ``(needer, needed)`` file paths from ``DT_NEEDED``/``PT_INTERP`` reasons, sorted.
    """

    name: str
    manifest_digest: str
    arch: str
    record: dict[str, Any]
    packages: dict[str, dict[str, Any]]
    files: dict[str, FileFacts]
    edges: list[tuple[str, str]] = field(default_factory=list)

    def package_edges(self) -> list[tuple[str, str]]:
        """``(A, B)`` package ids where a file of A needs a file of B, A != B, sorted."""
        pairs = set()
        for needer, needed in self.edges:
            a, b = self.files[needer].package, self.files[needed].package
            if a is not None and b is not None and a != b:
                pairs.add((a, b))
        return sorted(pairs)


def render_sbom(image: str, fmt: str = "cyclonedx", epoch: int = 0, platform: str | None = None) -> bytes:
    """Render the SBOM of ``image``.

    Args:
        image: anything :func:`~.image.open_image` reads (OCI layout ``DIR[:TAG]``,
            oci-archive, docker-archive, smith ``.tar.gz``).
        fmt: ``cyclonedx`` (CycloneDX 1.6 JSON) or ``spdx`` (SPDX 2.3 JSON).
        epoch: the document's timestamp (``SOURCE_DATE_EPOCH``).
        platform: ``[OS/]ARCH[/VARIANT]``: the image to pick from a multi-platform index.

    Returns:
        The document: UTF-8 JSON with sorted keys, two-space indented, ending in a newline.

    Raises:
        SpecError: unknown format.
        LayoutError: the image is unreadable, has no provenance record, or the
            record does not match the layer holding it.
        DigestMismatchError: a blob fails its digest.
    """
    if fmt not in FORMATS:
        raise SpecError(f"unknown SBOM format {fmt!r} (choose from {', '.join(FORMATS)})")
    timestamp = rfc3339(epoch)  # checks the range
    facts = read_image_facts(image, sha1=fmt == "spdx", platform=platform)
    if fmt == "spdx":
        return render_spdx(facts, timestamp)
    return render_cyclonedx(facts, epoch)


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file beside it, fsynced, renamed)."""
    from microcontainer_tool.hostfs.atomic import write_atomic

    write_atomic(path, data)


# --- reading the image -----------------------------------------------------------------------


@dataclass
class _Layer:
    """One streamed layer: regular file hashes, hardlink-aware, and its symlinks."""

    files: dict[str, tuple[int, str, str]] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    record: bytes | None = None


def read_image_facts(image: str, sha1: bool = False, platform: str | None = None) -> ImageFacts:
    """Read the provenance record and hash the files of the layer holding it.

    ``platform`` (``[OS/]ARCH[/VARIANT]``) picks the image of a multi-platform index.

    Raises:
        LayoutError: no record, a malformed record, or a record listing a file the layer lacks.
        DigestMismatchError: the layer's blob or tar does not match its digests.
    """
    with open_image(image, platform=platform) as view:
        for number in reversed(range(len(view.layers))):
            layer = _scan_layer(view, number, sha1)
            if layer.record is not None:
                break
        else:
            raise LayoutError(f"{image}: no provenance record ({RECORD_PATH}): not built by"
                              " microcontainer-tool, or built before provenance records existed")
        entries = {path: "file" for path in layer.files}
        entries.update({path: "symlink" for path in layer.links})
        record = parse_record(layer.record, image, entries)
        name = _image_name(view)
        arch = str(view.config.get("architecture") or record.get("image", {}).get("arch") or "")
        digest = view.manifest_digest
    return _facts(image, name, digest, arch, record, layer)


def _image_name(view: ImageView) -> str:
    labels = (view.config.get("config") or {}).get("Labels") or {}
    title = labels.get("org.opencontainers.image.title") if isinstance(labels, dict) else None
    if isinstance(title, str) and title.strip():
        return title.strip()
    base = posixpath.basename(posixpath.normpath(view.path.replace("\\", "/"))) or "image"
    for suffix in (".tar.gz", ".tgz", ".tar"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def _normalize(name: str) -> str | None:
    """A tar member name as an absolute image path; ``None`` for the root or a path climbing out."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/" + "/".join(parts)


def _scan_layer(view: ImageView, number: int, sha1: bool) -> _Layer:
    """Stream layer ``number`` once: hash its regular files, keep its links and the record."""
    layer = _Layer()
    with view.layer_tar(number) as tar:
        for member in tar:
            path = _normalize(member.name)
            if path is None:
                continue
            if member.issym():
                layer.links[path] = member.linkname
            elif member.islnk():
                target = _normalize(member.linkname)
                if target in layer.files:
                    layer.files[path] = layer.files[target]
            elif member.isreg():
                reader = tar.extractfile(member)
                assert reader is not None
                keep = path == RECORD_PATH
                if keep and member.size > MAX_RECORD:
                    raise LayoutError(f"{view.path}: {RECORD_PATH} is too large ({member.size} bytes)")
                layer.files[path], data = _hash(reader, sha1, keep)
                if keep:
                    layer.record = data
    return layer


def _hash(reader: Any, sha1: bool, keep: bool) -> tuple[tuple[int, str, str], bytes]:
    """``((size, sha256, sha1 or ""), content if keep else b"")`` of a member's content."""
    sha = hashlib.sha256()
    sha_1 = hashlib.sha1(usedforsecurity=False) if sha1 else None
    size = 0
    kept = bytearray()
    while chunk := reader.read(CHUNK_SIZE):
        sha.update(chunk)
        if sha_1 is not None:
            sha_1.update(chunk)
        if keep:
            kept += chunk
        size += len(chunk)
    return (size, sha.hexdigest(), sha_1.hexdigest() if sha_1 else ""), bytes(kept)


def _resolve(layer: _Layer, path: str) -> str | None:
    """Follow symlinks of the layer from ``path`` to a regular file of the layer, or ``None``."""
    hops = 0
    parts = path.strip("/").split("/")
    current = ""
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            current = posixpath.dirname(current) if current else ""
            continue
        candidate = f"{current}/{part}"
        target = layer.links.get(candidate)
        if target is None:
            current = candidate
            continue
        hops += 1
        if hops > _MAX_LINK_HOPS:
            return None
        parts = target.split("/") + parts
        current = "" if target.startswith("/") else current
    return current if current in layer.files else None


def _facts(image: str, name: str, digest: str, arch: str, record: dict[str, Any],
           layer: _Layer) -> ImageFacts:
    packages = record["packages"]
    if not all(isinstance(k, str) and isinstance(v, dict) for k, v in packages.items()):
        raise LayoutError(f"{image}: {RECORD_PATH}: malformed packages")
    entries: dict[str, dict[str, Any]] = {}
    for raw, entry in record["files"].items():
        path = _normalize(raw) if isinstance(raw, str) else None
        if path is None or not isinstance(entry, dict):
            raise LayoutError(f"{image}: {RECORD_PATH}: malformed entry {raw!r}")
        entries[path] = entry
    files: dict[str, FileFacts] = {}
    for path, entry in entries.items():
        if entry.get("kind") != "file":
            continue
        if path not in layer.files:
            raise LayoutError(f"{image}: {RECORD_PATH} lists {path}, which is not a file of its layer")
        package = entry.get("package")
        if package is not None and package not in packages:
            raise LayoutError(f"{image}: {RECORD_PATH}: {path} names unknown package {package!r}")
        why = tuple(r for r in entry.get("why") or () if isinstance(r, dict))
        size, sha256, sha1 = layer.files[path]
        files[path] = FileFacts(path, size, sha256, sha1, package, str(entry.get("source") or ""), why)
    # The record itself is a file of the image, too.
    if RECORD_PATH in layer.files and RECORD_PATH not in files:
        size, sha256, sha1 = layer.files[RECORD_PATH]
        files[RECORD_PATH] = FileFacts(RECORD_PATH, size, sha256, sha1, None, "generated",
                                       ({"kind": "generated", "selector": "provenance record"},))
    # ELF edges: a needed/interpreter reason of entry X "by" file B means B needs X.
    # X may be a link (libfoo.so.1 -> libfoo.so.1.2): the edge goes to the file it resolves to.
    edges = set()
    for path, entry in entries.items():
        for reason in entry.get("why") or ():
            if not isinstance(reason, dict) or reason.get("kind") not in ("needed", "interpreter"):
                continue
            needer = _normalize(str(reason.get("by") or ""))
            needed = path if path in files else _resolve(layer, path)
            if needer in files and needed in files and needer != needed:
                edges.add((needer, needed))
    return ImageFacts(name, digest, arch, record, {k: packages[k] for k in sorted(packages)},
                      {p: files[p] for p in sorted(files)}, sorted(edges))


# --- shared helpers --------------------------------------------------------------------------


def _serial(facts: ImageFacts) -> uuid.UUID:
    """The document's UUID: a name-based (v5) UUID of the manifest digest."""
    return uuid.uuid5(_UUID_NAMESPACE, facts.manifest_digest)


def _reason_text(reason: Mapping[str, Any]) -> str:
    kind = reason.get("kind")
    if kind == "generated":
        return f"generated: {reason.get('selector') or reason.get('what') or ''}".rstrip(": ")
    text = describe(reason)
    if kind == "needed" and reason.get("name"):
        text += f" (as {reason['name']}" + (f", {reason['rule']})" if reason.get("rule") else ")")
    return text


def _version(facts: Mapping[str, Any]) -> str:
    """``[epoch:]version-release`` for an RPM; a deb's version (its epoch included)."""
    if facts.get("type") == "rpm":
        epoch = f"{facts['epoch']}:" if facts.get("epoch") else ""
        release = f"-{facts['release']}" if facts.get("release") else ""
        return f"{epoch}{facts.get('version', '')}{release}"
    return str(facts.get("version") or "")


def _purl(text: str) -> Any:
    """Parse a purl (``None`` if it is not one); its canonical string is ``.to_string()``."""
    from packageurl import PackageURL

    try:
        return PackageURL.from_string(text) if text else None
    except ValueError:
        return None


def _image_purl(facts: ImageFacts) -> Any:
    from packageurl import PackageURL

    qualifiers = {"arch": facts.arch} if facts.arch else None
    return PackageURL(type="oci", name=facts.name.lower(), version=facts.manifest_digest,
                      qualifiers=qualifiers)


def _os_packages(facts: ImageFacts) -> set[str]:
    """Packages that ship the image's ``os-release``: the operating system itself."""
    return {f.package for p in _OS_RELEASE if (f := facts.files.get(p)) is not None and f.package}


_LICENSE_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_OPERATORS = {"AND", "OR"}


def spdx_license(text: str) -> str | None:
    """``text`` if it is an SPDX license expression of known ids (as is, never rewritten), else ``None``.

    Known ids are those of the SPDX license list bundled with cyclonedx-python-lib
    (pinned, so the answer is too). ``LicenseRef-`` names are not taken as they
    are: an SPDX document must define them, so they are handled as any other
    free-form license text.
    """
    from cyclonedx.spdx import is_expression, is_supported_id

    text = text.strip()
    if not text:
        return None
    tokens = _LICENSE_TOKEN.findall(text)
    after_with = False
    for token in tokens:
        if token in ("(", ")") or token in _OPERATORS:
            continue
        if token == "WITH":
            after_with = True
            continue
        if after_with:
            after_with = False
            if not is_supported_id(token):
                return None
            continue
        if not is_supported_id(token[:-1] if token.endswith("+") else token):
            return None
    return text if is_expression(text) else None


def _json(document: Any) -> bytes:
    return (json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# --- CycloneDX 1.6 ---------------------------------------------------------------------------


def render_cyclonedx(facts: ImageFacts, epoch: int) -> bytes:
    """CycloneDX 1.6 JSON of ``facts``, built with cyclonedx-python-lib.

    bom-refs are explicit and content-derived (``image``, the package's purl or
    ``package:ID``, ``file:/PATH``), so no random bom-ref is ever generated.
    """
    from cyclonedx.model import HashAlgorithm, HashType, Property
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.bom_ref import BomRef
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.dependency import Dependency
    from cyclonedx.model.license import DisjunctiveLicense, LicenseExpression
    from cyclonedx.output.json import JsonV1Dot6

    def props(pairs: Iterable[tuple[str, str]]) -> list[Property]:
        return [Property(name=f"microcontainer:{k}", value=v) for k, v in pairs if v]

    def licenses(text: str) -> list[Any]:
        text = text.strip()
        if not text:
            return []
        expression = spdx_license(text)
        if expression is None:
            return [DisjunctiveLicense(name=text)]
        if _LICENSE_TOKEN.fullmatch(expression) and not expression.endswith("+"):
            return [DisjunctiveLicense(id=expression)]
        return [LicenseExpression(expression)]

    image_info = facts.record.get("image") or {}
    image = Component(
        type=ComponentType.CONTAINER, name=facts.name, version=facts.manifest_digest,
        bom_ref=BomRef("image"), purl=_image_purl(facts),
        properties=props([("arch", facts.arch), ("from", str(image_info.get("from") or "")),
                          ("from-image", str(image_info.get("from_image") or "")),
                          ("parent", str(image_info.get("parent") or ""))]),
    )
    tool = Component(type=ComponentType.APPLICATION, name=TOOL_NAME, version=__version__,
                     bom_ref=BomRef(f"tool:{TOOL_NAME}"))
    metadata = BomMetaData(component=image,
                           timestamp=datetime.datetime.fromtimestamp(epoch, datetime.UTC))
    metadata.tools.components.add(tool)
    bom = Bom(serial_number=_serial(facts), metadata=metadata)

    os_packages = _os_packages(facts)
    refs: dict[str, BomRef] = {}
    for key, package in facts.packages.items():
        purl = _purl(str(package.get("purl") or ""))
        # bom-refs must be unique (the library would otherwise rename a
        # duplicate with a random one): a purl twice falls back to the package id.
        ref_text = purl.to_string() if purl is not None else f"package:{key}"
        if ref_text in {r.value for r in refs.values()}:
            ref_text = f"package:{key}"
        ref = refs[key] = BomRef(ref_text)
        bom.components.add(Component(
            type=ComponentType.OPERATING_SYSTEM if key in os_packages else ComponentType.LIBRARY,
            name=str(package.get("name") or key), version=_version(package), bom_ref=ref, purl=purl,
            licenses=licenses(str(package.get("license") or "")),
            properties=props([("package-id", key), ("type", str(package.get("type") or "")),
                              ("arch", str(package.get("arch") or "")),
                              ("source-package", str(package.get("source") or "")),
                              ("repo", str(package.get("repo") or "")),
                              ("distro", str(package.get("distro") or ""))]),
        ))
    file_refs: dict[str, BomRef] = {}
    for path, info in facts.files.items():
        ref = file_refs[path] = BomRef(f"file:{path}")
        bom.components.add(Component(
            type=ComponentType.FILE, name=path, bom_ref=ref,
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=info.sha256)],
            properties=props([("why", _reason_text(info.why[0]) if info.why else ""),
                              ("package", info.package or ""),
                              ("source", info.source if info.package is None else ""),
                              ("size", str(info.size))]),
        ))

    top = [refs[k] for k in facts.packages] + \
        [file_refs[p] for p, f in facts.files.items() if f.package is None]
    bom.dependencies.add(Dependency(ref=image.bom_ref, dependencies=[Dependency(ref=r) for r in top]))
    needs: dict[str, set[str]] = {}
    for a, b in facts.package_edges():
        needs.setdefault(a, set()).add(b)
    for key, targets in needs.items():
        bom.dependencies.add(Dependency(ref=refs[key],
                                        dependencies=[Dependency(ref=refs[t]) for t in targets]))
    file_needs: dict[str, set[str]] = {}
    for needer, needed in facts.edges:
        file_needs.setdefault(needer, set()).add(needed)
    for path, targets in file_needs.items():
        bom.dependencies.add(Dependency(ref=file_refs[path],
                                        dependencies=[Dependency(ref=file_refs[t]) for t in targets]))

    text = JsonV1Dot6(bom).output_as_string()
    # The library's arrays are sorted sets (components by type, name, version,
    # bom-ref; dependencies by ref): deterministic. Its object keys follow its
    # serializer's field order with $schema/bomFormat/specVersion appended last;
    # re-serializing with sorted keys makes the bytes depend on the content only,
    # not on py-serializable's internals.
    return _json(json.loads(text))


# --- SPDX 2.3 --------------------------------------------------------------------------------


def _spdx_id(kind: str, name: str) -> str:
    """A stable SPDX id: readable, unique by a short hash of ``name``."""
    readable = re.sub(r"[^A-Za-z0-9.-]+", "-", name).strip("-")[:80]
    short = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"SPDXRef-{kind}-{readable}-{short}"


def render_spdx(facts: ImageFacts, created: str) -> bytes:
    """SPDX 2.3 JSON of ``facts``; ``created`` is the RFC 3339 timestamp."""
    serial = _serial(facts)
    image_id = "SPDXRef-Image"
    image_info = facts.record.get("image") or {}
    extracted: dict[str, str] = {}

    def declared(text: str) -> str:
        text = text.strip()
        if not text:
            return "NOASSERTION"
        expression = spdx_license(text)
        if expression is not None:
            return expression
        ref = "LicenseRef-" + (re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")[:60] or "unknown") + "-" + \
            hashlib.sha256(text.encode()).hexdigest()[:8]
        extracted[ref] = text
        return ref

    owned: dict[str | None, list[FileFacts]] = {}
    for info in facts.files.values():
        owned.setdefault(info.package, []).append(info)

    def analyzed(entry: dict[str, Any], contained: list[FileFacts]) -> None:
        # SPDX 2.3 (7.8): a package with filesAnalyzed false must not contain
        # files. A package CONTAINS the files it put in the image, so it says
        # filesAnalyzed true with the verification code of those files.
        if not contained:
            entry["filesAnalyzed"] = False
            return
        entry["filesAnalyzed"] = True
        entry["packageVerificationCode"] = {"packageVerificationCodeValue": hashlib.sha1(
            "".join(sorted(f.sha1 for f in contained)).encode(), usedforsecurity=False).hexdigest()}

    comment = "; ".join(f"{k}: {v}" for k, v in (("from", image_info.get("from")),
                                                   ("from image", image_info.get("from_image")),
                                                   ("parent", image_info.get("parent"))) if v)
    root: dict[str, Any] = {
        "SPDXID": image_id, "name": facts.name, "versionInfo": facts.manifest_digest,
        "primaryPackagePurpose": "CONTAINER", "downloadLocation": "NOASSERTION",
        "supplier": "NOASSERTION", "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": _image_purl(facts).to_string()}],
    }
    if comment:
        root["comment"] = comment
    analyzed(root, list(facts.files.values()))
    packages = [root]
    relationships = [("SPDXRef-DOCUMENT", "DESCRIBES", image_id)]
    os_packages = _os_packages(facts)
    ids: dict[str, str] = {}
    for key, package in facts.packages.items():
        spdx_id = ids[key] = _spdx_id("Package", key)
        entry: dict[str, Any] = {
            "SPDXID": spdx_id, "name": str(package.get("name") or key), "versionInfo": _version(package),
            "downloadLocation": "NOASSERTION", "supplier": "NOASSERTION",
            "licenseConcluded": "NOASSERTION", "licenseDeclared": declared(str(package.get("license") or "")),
            "copyrightText": "NOASSERTION",
            "primaryPackagePurpose": "OPERATING-SYSTEM" if key in os_packages else "LIBRARY",
        }
        analyzed(entry, owned.get(key, []))
        purl = _purl(str(package.get("purl") or ""))
        if purl is not None:
            entry["externalRefs"] = [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                                      "referenceLocator": purl.to_string()}]
        if package.get("source"):
            entry["sourceInfo"] = f"built from {package['source']}"
        entry["comment"] = f"microcontainer package id: {key}" + \
            (f"; repo: {package['repo']}" if package.get("repo") else "")
        packages.append(entry)
        relationships.append((image_id, "CONTAINS", spdx_id))
    files = []
    file_ids: dict[str, str] = {}
    for path, info in facts.files.items():
        spdx_id = file_ids[path] = _spdx_id("File", path)
        entry = {
            "SPDXID": spdx_id, "fileName": "." + path,
            "checksums": [{"algorithm": "SHA1", "checksumValue": info.sha1},
                          {"algorithm": "SHA256", "checksumValue": info.sha256}],
            "licenseConcluded": "NOASSERTION", "copyrightText": "NOASSERTION",
        }
        if info.why:
            entry["comment"] = "why: " + _reason_text(info.why[0]) + \
                ("" if info.package else f"; source: {info.source or 'unknown'}")
        files.append(entry)
        relationships.append((ids[info.package] if info.package else image_id, "CONTAINS", spdx_id))
    for a, b in facts.package_edges():
        relationships.append((ids[a], "DEPENDS_ON", ids[b]))
    for needer, needed in facts.edges:
        relationships.append((file_ids[needer], "DEPENDS_ON", file_ids[needed]))

    document: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{facts.name}@{facts.manifest_digest}",
        "documentNamespace": f"{_SPDX_NAMESPACE}{re.sub(r'[^A-Za-z0-9.-]+', '-', facts.name)}-{serial}",
        "creationInfo": {"created": created, "creators": [f"Tool: {TOOL_NAME}-{__version__}"]},
        "packages": sorted(packages, key=lambda p: (p["SPDXID"] != image_id, p["name"], p["SPDXID"])),
        "files": files,
        "relationships": [{"spdxElementId": a, "relationshipType": t, "relatedSpdxElement": b}
                          for a, t, b in sorted(set(relationships))],
    }
    if extracted:
        document["hasExtractedLicensingInfos"] = [
            {"licenseId": ref, "name": text, "extractedText": text,
             "comment": "the package's license field, not an SPDX license expression"}
            for ref, text in sorted(extracted.items())]
    return _json(document)
