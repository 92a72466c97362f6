"""The provenance record: why each file is in the image, and which package it came from.

Every build writes ``/var/lib/microcontainer/provenance.json`` into its
layer: canonical JSON listing each entry of the layer with its reasons
(spec entry, ``DT_NEEDED`` edge with the search rule, overlay, generated)
and its source (package, directory, image, project file), and the facts of
each contributing package (version, license, purl). ``microcontainer why``,
``inspect --packages`` and ``sbom`` read it back from the image, so the
answers travel with the image. The record holds no host path and no time:
it is as reproducible as the rest of the layer.

The record is compact (schema ``microcontainer-provenance/2``): each distinct
(source, package, reasons) combination is stored once in ``reasons``; a
directory's most common combination among its direct children is stored once
in ``dirs``; ``files`` lists, with their kind, only the entries that differ from
their directory's default. Every other entry of the layer takes its
directory's default, so a reader expands the record against the layer's own
entries (:func:`parse_record` with ``entries``) and gets every entry's exact
provenance back. 100,000 files selected by one ``paths`` entry cost one
reason and one line per directory instead of 100 bytes per file. Records of
schema ``microcontainer-provenance/1`` (every entry listed) are still read.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from microcontainer_tool import jsontext
from microcontainer_tool.errors import LayoutError, SourceError
from microcontainer_tool.model.tree import (
    DIR_MODE,
    FILE_MODE,
    Entry,
    EntryKind,
    FileTree,
    InlineContent,
    Provenance,
)
from microcontainer_tool.oci.model import canonical_json
from microcontainer_tool.sources.dpkg import DebPackage, DpkgDatabase

RECORD_PATH = "/var/lib/microcontainer/provenance.json"
SCHEMA = "microcontainer-provenance/2"
SCHEMA_V1 = "microcontainer-provenance/1"
"""The first schema: every entry listed with its reasons (still read)."""
MAX_RECORD = 64 << 20


def rpm_facts(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Package facts of an RPM from its header fields (see :class:`~.rpmroot.PackageRoot`)."""
    vendor = str(meta.get("vendor") or "")
    distro = vendor.split()[0].lower() if vendor.split() else ""
    name, version, release = str(meta["name"]), str(meta["version"]), str(meta["release"])
    epoch, arch = int(meta.get("epoch") or 0), str(meta["arch"])
    qualifiers = [f"arch={quote(arch, safe='')}"]
    if epoch:
        qualifiers.append(f"epoch={epoch}")
    if meta.get("sourcerpm"):
        qualifiers.append(f"upstream={quote(str(meta['sourcerpm']), safe='.-_~')}")
    namespace = f"{quote(distro, safe='')}/" if distro else ""
    purl = (f"pkg:rpm/{namespace}{quote(name, safe='.-_~+')}@{quote(f'{version}-{release}', safe='.-_~')}?"
            + "&".join(qualifiers))
    return {"type": "rpm", "name": name, "version": version, "release": release, "epoch": epoch,
            "arch": arch, "license": str(meta.get("license") or ""),
            "source": str(meta.get("sourcerpm") or ""),
            "repo": str(meta.get("repo") or ""), "distro": distro, "purl": purl}


def deb_facts(package: DebPackage, database: DpkgDatabase) -> dict[str, Any]:
    """Package facts of an installed Debian package."""
    version = package.version
    epoch = int(version.split(":", 1)[0]) if ":" in version and version.split(":", 1)[0].isdigit() else 0
    return {"type": "deb", "name": package.name, "version": version, "release": "", "epoch": epoch,
            "arch": package.arch, "license": database.license(package), "source": package.source,
            "repo": "", "distro": database.distro[0], "purl": database.purl(package)}


def record_for(tree: FileTree, packages: Mapping[str, Mapping[str, Any]], image: Mapping[str, Any]) -> dict:
    """The provenance record of ``tree`` (the record's own path excluded), in the compact schema.

    Args:
        tree: the layer's content.
        packages: package id -> facts (:func:`rpm_facts`, :func:`deb_facts`).
        image: ``arch``, ``from``, ``from_image``, ``parent``.

    Returns:
        ``schema``, ``image``, ``packages`` (the contributing ones), ``reasons``
        (distinct ``{"source", "package", "why"}``), ``dirs`` (directory -> index
        of its children's default reason) and ``files`` (path -> ``{"kind",
        "reason"}`` for the entries whose reason is not their directory's default).
    """
    reasons: list[dict[str, Any]] = []
    index: dict[tuple[Any, ...], int] = {}
    own: dict[str, tuple[str, int]] = {}
    used: set[str] = set()
    for entry in tree:
        if entry.path == RECORD_PATH:
            continue
        source = next((p.source for p in entry.provenance if p.source), "")
        package = source if source in packages else None
        if package is not None and entry.kind is not EntryKind.DIR:
            used.add(package)
        key = (source, package, entry.provenance)
        number = index.get(key)
        if number is None:
            number = index[key] = len(reasons)
            reasons.append({"source": source, "package": package,
                            "why": [p.to_json() for p in entry.provenance]})
        own[entry.path] = (entry.kind.value, number)
    counts: dict[str, Counter[int]] = {}
    for path, (_kind, number) in own.items():
        counts.setdefault(posixpath.dirname(path), Counter())[number] += 1
    dirs: dict[str, int] = {}
    for directory, counter in counts.items():
        number, count = min(counter.items(), key=lambda item: (-item[1], item[0]))
        if count >= 2:
            dirs[directory] = number
    files = {path: {"kind": kind, "reason": number} for path, (kind, number) in own.items()
             if dirs.get(posixpath.dirname(path)) != number}
    return {"schema": SCHEMA, "image": dict(image),
            "packages": {k: dict(v) for k, v in packages.items() if k in used},
            "reasons": reasons, "dirs": dirs, "files": files}


def add_record(tree: FileTree, packages: Mapping[str, Mapping[str, Any]], image: Mapping[str, Any]) -> None:
    """Put the provenance record of ``tree`` into it (with its parent directories)."""
    generated = Provenance("provenance record", "generated", "generated", "provenance record")
    tree.remove(RECORD_PATH)
    directory = posixpath.dirname(RECORD_PATH)
    while directory != "/":
        if tree.get(directory) is None:
            tree.add(Entry(directory, EntryKind.DIR, DIR_MODE, provenance=(generated,)))
        directory = posixpath.dirname(directory)
    data = canonical_json(record_for(tree, packages, image))  # the directories above it included
    tree.add(Entry(RECORD_PATH, EntryKind.FILE, FILE_MODE, content=InlineContent(data),
                   provenance=(generated,)))


def read_record(image: str, platform: str | None = None) -> dict[str, Any]:
    """Read the provenance record out of an image (the topmost layer holding one), expanded.

    Args:
        image: the image (layout, archive).
        platform: ``[OS/]ARCH[/VARIANT]``: the image of a multi-platform index.

    Returns:
        The record with ``files`` holding every entry of its layer: path ->
        ``{"kind", "source", "package", "why"}`` (see :func:`parse_record`).

    Raises:
        LayoutError: the image has no record, or it is malformed.
        DigestMismatchError: a blob fails its digest.
    """
    from microcontainer_tool.oci.imageview import member_info, open_image

    with open_image(image, platform=platform) as view:
        for number in reversed(range(len(view.layers))):
            data = None
            entries: dict[str, str] = {}
            with view.layer_tar(number) as tar:  # verified when the block ends
                for member in tar:
                    info = member_info(member)
                    if info is None:
                        continue
                    entries[info.path] = info.type
                    if info.path == RECORD_PATH and member.isfile() and member.size <= MAX_RECORD:
                        handle = tar.extractfile(member)
                        assert handle is not None
                        data = handle.read()
            if data is not None:
                return parse_record(data, image, entries)
    raise LayoutError(f"{image}: no provenance record ({RECORD_PATH}): not built by microcontainer-tool,"
                      " or built before provenance records existed")


def parse_record(data: bytes, image: str, entries: Mapping[str, str]) -> dict[str, Any]:
    """Parse and check a provenance record read out of ``image``, expanded against its layer.

    Args:
        data: the record's bytes.
        image: how messages name the image.
        entries: every entry of the layer holding the record: image path ->
            kind (``file``, ``hardlink``, ``dir``, ``symlink``). A compact record
            gives each entry it does not list its directory's default reason.

    Returns:
        ``schema``, ``image``, ``packages`` and ``files``: path -> ``{"kind",
        "source", "package", "why"}`` (the shape of schema 1, whichever was read).

    Raises:
        LayoutError: not valid JSON, not a record of a known schema, or an entry
            of the layer the record does not account for.
    """
    try:
        record = jsontext.loads(data)
    except ValueError as error:
        raise LayoutError(f"{image}: {RECORD_PATH} is not valid JSON: {error}") from None
    if not isinstance(record, dict) or record.get("schema") not in (SCHEMA, SCHEMA_V1) or \
            not isinstance(record.get("files"), dict) or not isinstance(record.get("packages"), dict):
        raise LayoutError(f"{image}: {RECORD_PATH} is not a {SCHEMA} record")
    if record["schema"] == SCHEMA_V1:
        return record
    return _expand(record, image, entries)


def _expand(record: dict[str, Any], image: str, entries: Mapping[str, str]) -> dict[str, Any]:
    """A compact record with every entry of its layer listed (the schema 1 shape)."""
    reasons, dirs = record.get("reasons"), record.get("dirs")
    if not isinstance(reasons, list) or not all(isinstance(r, dict) for r in reasons) or \
            not isinstance(dirs, dict):
        raise LayoutError(f"{image}: {RECORD_PATH} is not a {SCHEMA} record")

    def reason(number: Any, path: str) -> dict[str, Any]:
        if not isinstance(number, int) or isinstance(number, bool) or not 0 <= number < len(reasons):
            raise LayoutError(f"{image}: {RECORD_PATH}: {path} names no reason ({number!r})")
        found = reasons[number]
        return {"source": found.get("source", ""), "package": found.get("package"),
                "why": list(found.get("why") or [])}

    files: dict[str, Any] = {}
    for path, entry in record["files"].items():
        if not isinstance(entry, dict):
            raise LayoutError(f"{image}: {RECORD_PATH}: malformed entry {path!r}")
        files[path] = {"kind": entry.get("kind"), **reason(entry.get("reason"), path)}
    for path, kind in entries.items():
        if path == RECORD_PATH or path in files:
            continue
        directory = posixpath.dirname(path)
        if directory not in dirs:
            raise LayoutError(f"{image}: {RECORD_PATH} does not account for {path}")
        files[path] = {"kind": "file" if kind == "hardlink" else kind, **reason(dirs[directory], path)}
    return {"schema": record["schema"], "image": record.get("image") or {}, "packages": record["packages"],
            "files": {path: files[path] for path in sorted(files)}}


def describe(reason: Mapping[str, Any]) -> str:
    """One reason, for people."""
    kind = reason.get("kind", "")
    if kind == "paths":
        return f"paths: {reason.get('selector', '')}"
    if kind == "files":
        return f"files: {reason.get('selector', '')}"
    if kind == "rootfs":
        return "rootfs/ overlay"
    if kind == "libs":
        return f"libs: {reason.get('selector', '')}"
    if kind == "package":
        return f"package {reason.get('selector', '')} (named in the spec)"
    if kind == "needed":
        return f"needed by {reason.get('by', '')}"
    if kind == "interpreter":
        return f"interpreter of {reason.get('by', '')}"
    if kind == "pack":
        return f"pack {reason.get('selector', '')} ({reason.get('rule', '')})"
    if kind == "os-release":
        return f"os-release: {reason.get('selector', '')} (the distribution, for scanners)"
    return f"generated: {reason.get('selector', '')}"


def why(record: Mapping[str, Any], path: str) -> list[str]:
    """The chains that put ``path`` in the image, one line each.

    Each line follows ``needed``/``interpreter`` reasons (and an automatic
    ``pack``'s trigger) to the spec entry that started it:
    ``/usr/lib64/libssl.so.3 <- needed by /usr/lib64/libcurl.so.4 <- needed by
    /usr/bin/curl <- paths: /usr/bin/curl``.

    Raises:
        SourceError: ``path`` is not in the record.
    """
    files = record["files"]
    path = posixpath.normpath("/" + path.lstrip("/"))
    if path not in files:
        parent = (record.get("image") or {}).get("parent")
        if parent:
            raise SourceError(f"{path}: not in this image's own layer (its parent {parent} may hold it)")
        raise SourceError(f"{path}: not in the image")
    lines = []
    for reason in files[path].get("why") or [{}]:
        chain = [path, _edge(reason)]
        seen = {path}
        current = reason
        while current.get("kind") in ("needed", "interpreter") or (current.get("kind") == "pack"
                                                                   and current.get("by")):
            needer = str(current.get("by", ""))
            if needer in seen or needer not in files:
                break
            seen.add(needer)
            current = (files[needer].get("why") or [{}])[0]
            chain.append(_edge(current))
        lines.append(" <- ".join(chain))
    return lines


def _edge(reason: Mapping[str, Any]) -> str:
    text = describe(reason)
    if reason.get("kind") == "needed" and reason.get("name"):
        text += f" (as {reason['name']}, {reason.get('rule', '')})"
    return text


def package_line(record: Mapping[str, Any], path: str) -> str:
    """Where ``path`` came from: its package with version, or its source."""
    entry = record["files"][posixpath.normpath("/" + path.lstrip("/"))]
    package = entry.get("package")
    if package and package in record["packages"]:
        facts = record["packages"][package]
        return f"package: {package_label(facts)}"
    return f"source: {entry.get('source') or 'unknown'}"


def package_label(facts: Mapping[str, Any]) -> str:
    """``name-[epoch:]version-release.arch`` for an RPM, ``name version arch`` for a deb."""
    if facts.get("type") == "rpm":
        epoch = f"{facts['epoch']}:" if facts.get("epoch") else ""
        return f"{facts['name']}-{epoch}{facts['version']}-{facts['release']}.{facts['arch']} (rpm)"
    return f"{facts['name']} {facts['version']} {facts['arch']} (deb)"
