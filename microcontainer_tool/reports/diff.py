"""What changed between two images: files, packages, ELF edges, config (``microcontainer diff``).

:func:`summarize` reads one image (anything
:func:`~microcontainer_tool.oci.imageview.open_image` reads) into an
:class:`ImageSummary`: its merged file system (every layer applied bottom
first with the OCI whiteout rules: ``.wh.NAME`` removes ``NAME`` and its
subtree, ``.wh..wh..opq`` the lower layers' children of its directory), each
regular file's content digest, the packages and ELF edges of its provenance
record (the topmost record in the merged file system: for an image built with
``parent:`` that is the image's own layer, so the parent's packages are not
listed), and its config fields. :func:`compare` is a pure function of two
summaries; :func:`render_text` and :func:`render_json` print the result.

The provenance record itself is left out of the file list: what changes in
it is reported as packages and ELF edges. The package lists generated for
scanners (``/var/lib/rpmmanifest/container-manifest-2``,
``/var/lib/dpkg/status.d/NAME``: the record says ``generated: rpm manifest`` /
``dpkg status``) change with every package change; they are reported
apart, as ``metadata``, so ``files`` holds the packages' own files.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from microcontainer_tool.model.provenance import MAX_RECORD, RECORD_PATH, parse_record
from microcontainer_tool.oci.imageview import ImageView, member_info
from microcontainer_tool.oci.layer import CHUNK_SIZE

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"

#: Top-level config fields compared besides ``config.*`` (the platform and creation time).
TOP_FIELDS = ("architecture", "os", "variant", "created")
#: The ``name`` of a ``PT_INTERP`` edge.
INTERPRETER = "(interpreter)"
#: ``generated`` selectors of the record that mark the package lists written for scanners.
PACKAGE_METADATA = ("rpm manifest", "dpkg status")


@dataclass(frozen=True)
class FileState:
    """One path of an image's merged file system.

    Attributes:
        type: ``file``, ``dir``, ``symlink``, ``hardlink``, ``char``, ``block``, ``fifo``.
        mode: permission bits.
        size: content size (0 for non-files).
        link: symlink target, or a hardlink's absolute target.
        digest: ``sha256:`` of a regular file's content, else empty.
        owner: ``uid:gid``.
    """

    type: str
    mode: int
    size: int = 0
    link: str = ""
    digest: str = ""
    owner: str = "0:0"


@dataclass
class ImageSummary:
    """What :func:`compare` looks at in one image.

    Attributes:
        label: how the image was named.
        image_id: the config digest.
        files: path -> state, the merged file system (the provenance record left out).
        record: the image carries a provenance record.
        packages: package key (its name, or ``name.arch`` if several arches) -> facts.
        owners: path -> package key, from the record.
        metadata: paths of the package lists generated for scanners (:data:`PACKAGE_METADATA`).
        edges: ``(needer, name, object)``: the record's ``DT_NEEDED`` edges (``name``: the
            soname asked for) and ``PT_INTERP`` edges (``name``: :data:`INTERPRETER`), each
            to the regular file it resolved to.
        config: compared config field -> value (``config.*`` fields and :data:`TOP_FIELDS`).
    """

    label: str
    image_id: str
    files: dict[str, FileState] = field(default_factory=dict)
    record: bool = False
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    metadata: set[str] = field(default_factory=set)
    edges: set[tuple[str, str, str]] = field(default_factory=set)
    config: dict[str, Any] = field(default_factory=dict)


def summarize(view: ImageView, label: str | None = None) -> ImageSummary:
    """Read an opened image into a summary (every layer streamed once, verified).

    Raises:
        DigestMismatchError: a blob or layer does not match its digest.
        LayoutError: a layer is not a readable tar, or the record is malformed.
    """
    label = label or view.path
    files: dict[str, FileState] = {}
    record_data: bytes | None = None
    record_layer: dict[str, FileState] = {}
    for number in range(len(view.layers)):
        opaque: list[str] = []
        removed: list[str] = []
        layer: dict[str, FileState] = {}
        with view.layer_tar(number) as tar:
            for member in tar:
                info = member_info(member)
                if info is None:
                    continue
                directory, base = posixpath.split(info.path)
                if base == OPAQUE:
                    opaque.append(directory)
                    continue
                if base.startswith(WHITEOUT):
                    removed.append(posixpath.join(directory, base[len(WHITEOUT):]))
                    continue
                digest = ""
                if info.type == "file":
                    handle = tar.extractfile(member)
                    assert handle is not None
                    sha = hashlib.sha256()
                    keep = info.path == RECORD_PATH and info.size <= MAX_RECORD
                    chunks = []
                    while chunk := handle.read(CHUNK_SIZE):
                        sha.update(chunk)
                        if keep:
                            chunks.append(chunk)
                    digest = "sha256:" + sha.hexdigest()
                    if keep:
                        record_data = b"".join(chunks)
                        record_layer = layer  # filled as the layer is read
                layer[info.path] = FileState(info.type, info.mode, info.size, info.linkname, digest,
                                             f"{member.uid}:{member.gid}")
        for directory in opaque:
            prefix = directory.rstrip("/") + "/"
            for path in [p for p in files if p.startswith(prefix)]:
                del files[path]
        for gone in removed:
            prefix = gone + "/"
            for path in [p for p in files if p == gone or p.startswith(prefix)]:
                del files[path]
        files.update(layer)
    summary = ImageSummary(label, str((view.manifest.get("config") or {}).get("digest", "")))
    if RECORD_PATH in files and record_data is not None:
        del files[RECORD_PATH]
        entries = {path: state.type for path, state in record_layer.items()}
        _read_record(summary, parse_record(record_data, label, entries))
    summary.files = files
    conf = view.config.get("config")
    summary.config = {key: value for key, value in (conf if isinstance(conf, dict) else {}).items()}
    for key in TOP_FIELDS:
        if key in view.config:
            summary.config[key] = view.config[key]
    return summary


def _read_record(summary: ImageSummary, record: Mapping[str, Any]) -> None:
    summary.record = True
    facts = {str(k): dict(f) for k, f in record["packages"].items() if isinstance(f, dict)}
    names: dict[str, int] = {}
    for fact in facts.values():
        names[str(fact.get("name", ""))] = names.get(str(fact.get("name", "")), 0) + 1
    keys = {}
    for package_id, fact in facts.items():
        name = str(fact.get("name", ""))
        keys[package_id] = name if names[name] == 1 else f"{name}.{fact.get('arch', '')}"
        summary.packages[keys[package_id]] = fact
    for path, entry in record["files"].items():
        package = entry.get("package") if isinstance(entry, dict) else None
        if package in keys:
            summary.owners[str(path)] = keys[package]
        why = entry.get("why") if isinstance(entry, dict) else None
        if isinstance(why, list) and any(isinstance(r, dict) and r.get("kind") == "generated"
                                         and r.get("selector") in PACKAGE_METADATA for r in why):
            summary.metadata.add(str(path))
        if not isinstance(entry, dict) or entry.get("kind") != "file":
            continue  # the objects themselves, not the links and directories on the way to them
        for reason in entry.get("why") or []:
            if isinstance(reason, dict) and reason.get("kind") in ("needed", "interpreter") \
                    and reason.get("by"):
                name = str(reason.get("name") or "") if reason["kind"] == "needed" else INTERPRETER
                summary.edges.add((str(reason["by"]), name, str(path)))


def package_version(facts: Mapping[str, Any]) -> str:
    """``[epoch:]version[-release][.arch]`` of a package's facts."""
    epoch = f"{facts['epoch']}:" if facts.get("epoch") and facts.get("type") == "rpm" else ""
    release = f"-{facts['release']}" if facts.get("release") else ""
    arch = f".{facts['arch']}" if facts.get("arch") else ""
    return f"{epoch}{facts.get('version', '')}{release}{arch}"


def compare(old: ImageSummary, new: ImageSummary) -> dict[str, Any]:
    """The differences between two summaries, as canonical JSON-ready data (sorted lists).

    Returns:
        ``identical`` (bool), ``image_id`` (``{"old", "new"}``), ``files``
        (``added``/``removed``/``changed``), ``packages`` (the same three),
        ``edges`` (``added``/``removed``), ``config`` (``changed``: field,
        old, new; a missing field is ``null``) and ``provenance`` (which side
        has a record), ``metadata`` (the generated package lists that
        changed: path and ``added``/``removed``/``changed``).
    """
    files_added = [_file_json(path, new.files[path], new.owners.get(path, ""))
                   for path in sorted(new.files.keys() - old.files.keys())]
    files_removed = [_file_json(path, old.files[path], old.owners.get(path, ""))
                     for path in sorted(old.files.keys() - new.files.keys())]
    files_changed = []
    for path in sorted(old.files.keys() & new.files.keys()):
        before, after = old.files[path], new.files[path]
        if before != after:
            changes = [name for name in ("type", "mode", "size", "link", "digest", "owner")
                       if getattr(before, name) != getattr(after, name)]
            files_changed.append({"path": path, "changes": changes,
                                  "old": _file_json(path, before, old.owners.get(path, "")),
                                  "new": _file_json(path, after, new.owners.get(path, ""))})
    packages_added = [_package_json(key, new.packages[key])
                      for key in sorted(new.packages.keys() - old.packages.keys())]
    packages_removed = [_package_json(key, old.packages[key])
                        for key in sorted(old.packages.keys() - new.packages.keys())]
    packages_changed = [{"name": key, "old": package_version(old.packages[key]),
                         "new": package_version(new.packages[key])}
                        for key in sorted(old.packages.keys() & new.packages.keys())
                        if old.packages[key] != new.packages[key]]
    generated = old.metadata | new.metadata
    metadata = sorted([{"path": f["path"], "change": change}
                       for change, group in (("added", files_added), ("removed", files_removed),
                                             ("changed", files_changed))
                       for f in group if f["path"] in generated], key=lambda item: item["path"])
    files_added = [f for f in files_added if f["path"] not in generated]
    files_removed = [f for f in files_removed if f["path"] not in generated]
    files_changed = [f for f in files_changed if f["path"] not in generated]
    edges_added = [_edge_json(edge) for edge in sorted(new.edges - old.edges)]
    edges_removed = [_edge_json(edge) for edge in sorted(old.edges - new.edges)]
    config_changed = [{"field": key, "old": old.config.get(key), "new": new.config.get(key)}
                      for key in sorted(old.config.keys() | new.config.keys())
                      if old.config.get(key) != new.config.get(key)]
    result: dict[str, Any] = {
        "old": old.label, "new": new.label,
        "image_id": {"old": old.image_id, "new": new.image_id},
        "files": {"added": files_added, "removed": files_removed, "changed": files_changed},
        "metadata": metadata,
        "packages": {"added": packages_added, "removed": packages_removed, "changed": packages_changed},
        "edges": {"added": edges_added, "removed": edges_removed},
        "config": {"changed": config_changed},
        "provenance": {"old": old.record, "new": new.record},
    }
    result["identical"] = old.image_id == new.image_id and not any(
        (files_added, files_removed, files_changed, metadata, packages_added, packages_removed,
         packages_changed, edges_added, edges_removed, config_changed))
    return result


def only_package(result: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``result`` narrowed to package ``name``: its package change and the files it owns.

    ``identical`` then says whether that package is unchanged (present or
    absent in both, same facts). Files are those the package owns in either
    image's record (``name`` or ``name.ARCH``); edges and config are dropped.
    """
    def matches(key: str) -> bool:
        return key == name or key.rsplit(".", 1)[0] == name

    packages = result["packages"]
    pick = {kind: [p for p in packages[kind] if matches(p["name"])]
            for kind in ("added", "removed", "changed")}
    files = result["files"]
    narrowed = dict(result)
    narrowed["packages"] = pick
    narrowed["files"] = {
        "added": [f for f in files["added"] if matches(f["package"])],
        "removed": [f for f in files["removed"] if matches(f["package"])],
        "changed": [f for f in files["changed"]
                    if matches(f["old"]["package"]) or matches(f["new"]["package"])],
    }
    narrowed["edges"] = {"added": [], "removed": []}
    narrowed["metadata"] = []
    narrowed["config"] = {"changed": []}
    narrowed["image_id"] = dict(result["image_id"])
    narrowed["identical"] = not any(pick.values()) and not any(narrowed["files"].values())
    narrowed["package"] = name
    return narrowed


def _edge_json(edge: tuple[str, str, str]) -> dict[str, str]:
    return {"needer": edge[0], "name": edge[1], "needed": edge[2]}


def _file_json(path: str, state: FileState, package: str) -> dict[str, Any]:
    return {"path": path, "type": state.type, "mode": f"{state.mode:04o}", "size": state.size,
            "link": state.link, "digest": state.digest, "owner": state.owner, "package": package}


def _package_json(key: str, facts: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": key, "version": package_version(facts), "type": str(facts.get("type", ""))}


def render_json(result: Mapping[str, Any]) -> str:
    """Canonical JSON text of a :func:`compare` result (sorted keys, 2-space indent, newline)."""
    return json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def render_text(result: Mapping[str, Any]) -> str:
    """The result for people: one line per difference, grouped; ``identical`` alone if none."""
    if result["identical"]:
        return "identical\n"
    lines = [f"--- {result['old']}", f"+++ {result['new']}"]
    ids = result["image_id"]
    if ids["old"] != ids["new"]:
        lines.append(f"image ID {ids['old']} -> {ids['new']}")
    packages = result["packages"]
    for item in packages["changed"]:
        lines.append(f"package ~ {item['name']} {item['old']} -> {item['new']}")
    for item in packages["added"]:
        lines.append(f"package + {item['name']} {item['version']}")
    for item in packages["removed"]:
        lines.append(f"package - {item['name']} {item['version']}")
    files = result["files"]
    for item in files["changed"]:
        lines.append(f"file    ~ {item['path']}{_changes(item)}{_owner(item['new']['package'])}")
    for item in files["added"]:
        lines.append(f"file    + {item['path']}{_describe(item)}{_owner(item['package'])}")
    for item in files["removed"]:
        lines.append(f"file    - {item['path']}{_describe(item)}{_owner(item['package'])}")
    for item in result["metadata"]:
        lines.append(f"meta    ~ {item['path']} ({item['change']}: the package list for scanners)")
    for item in result["edges"]["added"]:
        lines.append(f"elf     + {item['needer']} needs {item['name']} => {item['needed']}")
    for item in result["edges"]["removed"]:
        lines.append(f"elf     - {item['needer']} needs {item['name']} => {item['needed']}")
    for item in result["config"]["changed"]:
        lines.append(f"config  ~ {item['field']}: {_value(item['old'])} -> {_value(item['new'])}")
    provenance = result["provenance"]
    if provenance["old"] != provenance["new"]:
        which = "old" if not provenance["old"] else "new"
        lines.append(f"note: the {which} image has no provenance record:"
                     " its packages and ELF edges are unknown")
    return "\n".join(lines) + "\n"


def _owner(package: str) -> str:
    return f" [{package}]" if package else ""


def _describe(item: Mapping[str, Any]) -> str:
    if item["type"] == "file":
        return f" ({item['size']} bytes)"
    if item["type"] in ("symlink", "hardlink"):
        return f" -> {item['link']} ({item['type']})"
    return f" ({item['type']})"


def _changes(item: Mapping[str, Any]) -> str:
    old, new = item["old"], item["new"]
    parts = []
    for name in item["changes"]:
        if name == "size":
            parts.append(f"{old['size']} -> {new['size']} bytes")
        elif name == "digest" and "size" not in item["changes"]:
            parts.append(f"content changed ({old['size']} bytes)")
        elif name in ("type", "mode", "link", "owner"):
            parts.append(f"{name} {old[name] or '(none)'} -> {new[name] or '(none)'}")
    return "  " + ", ".join(parts) if parts else ""


def _value(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value, sort_keys=True)
