"""Real RPM fixtures for tests, built with the host's ``rpmbuild -bb`` (no network, no root needed).

:func:`build_rpm` writes a spec file, stages the files of the package, and runs
``rpmbuild`` with its own ``_topdir`` under the test's work directory. The
post-install scripts (strip, brp-*, build-id links, debuginfo) are switched off so
the packaged bytes are exactly the bytes given.

Making a "libc package" for host binaries:
    With ``autoreqprov=True`` and real host ELF files, rpm's dependency generator
    adds soname requires such as ``libc.so.6()(64bit)``,
    ``libc.so.6(GLIBC_2.34)(64bit)`` and ``rtld(GNU_HASH)``. A test that needs
    them satisfied builds a second package that *provides* them::

        app = build_rpm(work, "app", files={"/usr/bin/ls": Path("/usr/bin/ls")})
        libc = build_rpm(work, "fakelibc", provides=elf_requires(Path("/usr/bin/ls")),
                         autoreqprov=False)

    :func:`elf_requires` runs rpm's own ``elfdeps -R`` on the files, so the
    provides match the generated requires exactly (``rtld(GNU_HASH)`` included).
    Alternatively ship the real libraries (``/lib/x86_64-linux-gnu/libc.so.6``)
    with ``autoreqprov=True``: rpm then generates ``libc.so.6()(64bit)`` provides
    itself, but ``rtld(GNU_HASH)`` only comes from the dynamic loader
    (``ld-linux-x86-64.so.2``), so package that too or add it to ``provides``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PAYLOADS = {
    "zstd": "w19.zstdio",
    "xz": "w6.xzdio",
    "gzip": "w9.gzdio",
    "bzip2": "w9.bzdio",
    "none": "w0.ufdio",
}
"""``payload`` argument of :func:`build_rpm` -> rpm's ``_binary_payload`` macro."""

ELFDEPS = "/usr/lib/rpm/elfdeps"


def have_rpmbuild() -> bool:
    """True if ``rpmbuild`` is on PATH (tests skip without it)."""
    return shutil.which("rpmbuild") is not None


def elf_requires(*paths: Path) -> list[str]:
    """The dependencies rpm's generator writes for ELF files (``elfdeps -R``), sorted, unique.

    Args:
        *paths: host ELF files (executables or libraries).

    Returns:
        Capabilities such as ``libc.so.6()(64bit)`` and ``rtld(GNU_HASH)``; a
        package that provides all of them satisfies a package containing the files.
    """
    out = subprocess.run([ELFDEPS, "-R", *map(str, paths)], check=True,
                         capture_output=True, text=True).stdout
    return sorted({line.strip() for line in out.splitlines() if line.strip()})


def _spec_path(path: str) -> str:
    """Quote an image path for a ``%files`` line (``%`` escaped, spaces allowed)."""
    if not path.startswith("/") or "\n" in path or '"' in path:
        raise ValueError(f"bad image path for a fixture: {path!r}")
    return '"' + path.replace("%", "%%") + '"'


def _stage_path(root: Path, image_path: str) -> Path:
    target = root / image_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    return target


def build_rpm(workdir: Path, name: str, version: str = "1.0", release: str = "1",
              arch: str = "x86_64", files: dict[str, bytes | Path] | None = None,
              symlinks: dict[str, str] | None = None, hardlinks: dict[str, str] | None = None,
              modes: dict[str, int] | None = None, ghosts: list[str] | None = None,
              dirs: list[str] | None = None, requires: list[str] | None = None,
              provides: list[str] | None = None, conflicts: list[str] | None = None,
              obsoletes: list[str] | None = None, recommends: list[str] | None = None,
              supplements: list[str] | None = None, epoch: int | None = None,
              payload: str = "zstd", autoreqprov: bool = True, license: str = "MIT",
              requires_pre: list[str] | None = None, suggests: list[str] | None = None,
              enhances: list[str] | None = None, summary: str | None = None,
              url: str = "", vendor: str = "", buildtime: int | None = 1700000000) -> Path:
    """Build a binary RPM with ``rpmbuild -bb`` and return its path.

    Args:
        workdir: a writable directory; the rpm lands at
            ``workdir/NAME-VERSION-RELEASE.ARCH.rpm`` and the build tree under
            ``workdir/.rpmbuild-NAME-...``.
        name, version, release: the package's NVR (``epoch`` optional).
        arch: ``x86_64`` (or another target rpm knows) or ``noarch``.
        files: image path -> content bytes, or a host file to copy (its mode is kept).
        symlinks: image path -> link target (stored as given).
        hardlinks: new image path -> existing path in ``files``: a real hardlink set.
        modes: image path -> full mode bits, e.g. ``0o4755`` (setuid); applied with
            ``%attr`` (owner root:root). Bytes files default to 0644, dirs to 0755.
        ghosts: ``%ghost`` files: in the header, never in the payload (mode 0644).
        dirs: directories owned by the package (``%dir``); parents of files are
            created in the build root but not owned unless listed here.
        requires, provides, conflicts, obsoletes, recommends, supplements,
            suggests, enhances: dependency lines exactly as in a spec
            (``"glibc >= 2.34"``, ``"(a or b)"``).
        requires_pre: ``Requires(pre):`` lines.
        epoch: ``Epoch:`` (none if ``None``).
        payload: ``zstd``, ``xz``, ``gzip``, ``bzip2`` or ``none``.
        autoreqprov: run rpm's automatic dependency generator (ELF sonames, ...).
        license, summary, url, vendor: header metadata.
        buildtime: ``SOURCE_DATE_EPOCH`` used as BUILDTIME (``None``: now).

    Returns:
        Path of the built ``.rpm``.

    Raises:
        subprocess.CalledProcessError: rpmbuild failed (its stderr is in the exception).
    """
    files = files or {}
    symlinks = symlinks or {}
    hardlinks = hardlinks or {}
    modes = modes or {}
    ghosts = ghosts or []
    dirs = dirs or []
    workdir = Path(workdir)
    nvra = f"{name}-{version}-{release}.{arch}"
    topdir = workdir / f".rpmbuild-{nvra}"
    if topdir.exists():
        shutil.rmtree(topdir)
    stage = topdir / "STAGE"
    stage.mkdir(parents=True)

    for path in dirs:
        _stage_path(stage, path).mkdir(parents=True, exist_ok=True)
    for path, content in files.items():
        target = _stage_path(stage, path)
        if isinstance(content, (bytes, bytearray)):
            target.write_bytes(content)
            target.chmod(0o644)
        else:
            shutil.copy2(content, target)
    for path, existing in hardlinks.items():
        os.link(_stage_path(stage, existing), _stage_path(stage, path))
    for path, link in symlinks.items():
        os.symlink(link, _stage_path(stage, path))
    for path, mode in modes.items():
        target = stage / path.lstrip("/")
        if target.exists() and not target.is_symlink():
            target.chmod(mode & 0o7777)

    def attr(path: str, default: str) -> str:
        mode = modes.get(path)
        return f"%attr({mode & 0o7777:04o},root,root) " if mode is not None else default

    lines = [
        f"Name: {name}",
        f"Version: {version}",
        f"Release: {release}",
        f"Summary: {summary or f'test package {name}'}",
        f"License: {license}",
    ]
    if epoch is not None:
        lines.append(f"Epoch: {epoch}")
    if url:
        lines.append(f"URL: {url}")
    if vendor:
        lines.append(f"Vendor: {vendor}")
    if arch == "noarch":
        lines.append("BuildArch: noarch")
    if not autoreqprov:
        lines.append("AutoReqProv: no")
    for tag, values in (("Requires", requires), ("Requires(pre)", requires_pre),
                        ("Provides", provides), ("Conflicts", conflicts),
                        ("Obsoletes", obsoletes), ("Recommends", recommends),
                        ("Supplements", supplements), ("Suggests", suggests),
                        ("Enhances", enhances)):
        lines += [f"{tag}: {value}" for value in values or []]
    lines += [
        "",
        "%description",
        f"Test fixture {name}.",
        "",
        "%install",
        "mkdir -p %{buildroot}",
        f"cp -a '{stage}/.' %{{buildroot}}/",
        "",
        "%files",
        "%defattr(-,root,root,-)",
    ]
    lines += [f"%dir {attr(d, '%attr(0755,root,root) ')}{_spec_path(d)}" for d in dirs]
    lines += [attr(p, "") + _spec_path(p) for p in [*files, *hardlinks]]
    lines += [_spec_path(p) for p in symlinks]
    lines += [f"%ghost {attr(g, '%attr(0644,root,root) ')}{_spec_path(g)}" for g in ghosts]
    spec = topdir / f"{name}.spec"
    spec.write_text("\n".join(lines) + "\n")

    defines = {
        "_topdir": str(topdir),
        "_binary_payload": PAYLOADS[payload],
        "__os_install_post": "%{nil}",
        "__arch_install_post": "%{nil}",
        "__spec_install_post": "%{nil}",
        "debug_package": "%{nil}",
        "_build_id_links": "none",
        "_unpackaged_files_terminate_build": "0",
        "_buildhost": "fixture.invalid",
        "_binary_filedigest_algorithm": "8",
        "use_source_date_epoch_as_buildtime": "1",
        "clamp_mtime_to_source_date_epoch": "1",
    }
    cmd = ["rpmbuild", "-bb", "--nodeps", "--quiet"]
    for key, value in defines.items():
        cmd += ["--define", f"{key} {value}"]
    if arch != "noarch":
        cmd += ["--target", arch]
    cmd.append(str(spec))
    env = dict(os.environ, LC_ALL="C")
    if buildtime is not None:
        env["SOURCE_DATE_EPOCH"] = str(buildtime)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd, proc.stdout, proc.stderr)
    built = topdir / "RPMS" / arch / f"{nvra}.rpm"
    result = workdir / built.name
    shutil.move(built, result)
    return result
