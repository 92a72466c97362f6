"""Command-line front end: ``microcontainer COMMAND ...``.

The only place (with the SCons adapter) where library errors become exit
codes: a :class:`MicrocontainerError` prints ``microcontainer: error: MESSAGE``
on one line and exits non-zero; there is no traceback for anything a user can
cause.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from microcontainer_tool import __version__
from microcontainer_tool.errors import MicrocontainerError, SpecError
from microcontainer_tool.oci.formats import COMPRESSIONS, FORMATS

SBOM_FORMATS = {"cyclonedx": ("application/vnd.cyclonedx+json", ".cdx.json"),
                "spdx": ("application/spdx+json", ".spdx.json")}
"""``build --sbom`` formats: (artifact media type, side file suffix)."""


def source_date_epoch(environ: dict[str, str] | os._Environ[str]) -> int:
    """The build's timestamp: ``SOURCE_DATE_EPOCH`` or 0.

    Raises:
        SpecError: the variable is set but not a non-negative integer.
    """
    value = environ.get("SOURCE_DATE_EPOCH", "")
    if value == "":
        return 0
    if not value.isdigit():
        raise SpecError(f"SOURCE_DATE_EPOCH={value!r} is not a non-negative integer")
    return int(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="microcontainer",
        description="Build minimal, read-only, reproducible OCI images (microcontainers).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    build = sub.add_parser("build", help="build an image from a spec")
    build.add_argument("-c", "--config", metavar="SPEC",
                       help="spec file or its directory (default: ./microimage.yaml, else ./smith.yaml)")
    build.add_argument("-o", "--output", metavar="OUT", required=True,
                       help="output: DIR (OCI layout), OUT.tar (oci-archive), OUT.tar.gz/.tgz (smith)")
    build.add_argument("-t", "--tag",
                       help="tag (ref.name) of the image (default: the tag in --name, else latest)")
    build.add_argument("--name", metavar="[HOST[:PORT]/]REPO[:TAG]",
                       help="the image's name: podman and containerd name the loaded image by it"
                            " (io.containerd.image.name), docker-archive's RepoTags carry it"
                            " (default: output's stem)")
    build.add_argument("--format", choices=FORMATS, help="output format (default: by OUT's suffix)")
    build.add_argument("--compression", choices=COMPRESSIONS, default="gzip",
                       help="layer compression (default: gzip, libdeflate level 6; gzip-fast: level 1, "
                            "about twice as fast and 9%% larger, for edit loops; zstd is opt-in)")
    build.add_argument("--allow-missing", action="store_true",
                       help="warn instead of failing when a library cannot be found")
    build.add_argument("--cache-dir", metavar="DIR",
                       help="downloads, repo metadata, extracted packages and indexed source-image "
                            "layers (default: $MCT_CACHE_DIR or ~/.cache/microcontainer-tool)")
    build.add_argument("--offline", action="store_true",
                       help="RPM specs: use only microimage.lock and the cache; never download")
    build.add_argument("--layer-cache", metavar="DIR",
                       help="reuse compressed layers of unchanged file trees from DIR (edit-build loops)")
    build.add_argument("--plain-http", action="store_true",
                       help="talk HTTP, not HTTPS, to registries of from:/parent: images")
    build.add_argument("--insecure", action="store_true",
                       help="do not verify registries' TLS certificates (from:/parent: images)")
    build.add_argument("--docker-config", metavar="PATH",
                       help="config.json (or its directory) with registry credentials"
                            " (default: $DOCKER_CONFIG or ~/.docker)")
    build.add_argument("--deadline", type=_positive_seconds, default=300, metavar="SECONDS",
                       help=DEADLINE_HELP + " (from:/parent: images)")
    build.add_argument("--max-layer-size", type=_size, metavar="SIZE",
                       help="refuse a layer of a from:/parent: image that decompresses to more than SIZE "
                            "(bytes, or with K, M, G, T; default: 16G)")
    build.add_argument("--max-layer-ratio", type=_positive_int, metavar="N",
                       help="refuse a layer of a from:/parent: image that decompresses to more than N times "
                            "its compressed size, once past 64 MiB (default: 1000)")
    build.add_argument("--sbom", nargs="?", const="cyclonedx", choices=tuple(SBOM_FORMATS), metavar="FORMAT",
                       help="also write an SBOM (cyclonedx, the default, or spdx) beside the output as "
                            "OUT.cdx.json / OUT.spdx.json; an OCI layout also gets it attached as an OCI 1.1 "
                            "referrer of the image (pushed with it); archives get only the side file")
    build.add_argument("--probe", metavar="'CMD ARGS...'",
                       help="after building, run CMD in the image (read-only, no network) under strace and "
                            "report the files it looked for that the sysroot has and the image lacks; "
                            "fail if CMD fails or any are missing (the image is written either way)")
    build.add_argument("--probe-warn", action="store_true",
                       help="a failed probe is a warning: exit 0")
    build.add_argument("--probe-read", metavar="DIR",
                       help="host directory mounted read-only at /read for the probe")
    build.add_argument("-q", "--quiet", action="store_true", help="print only the manifest digest")
    _add_cache_repo_options(build)
    build.add_argument("--platform", metavar="[OS/]ARCH[/VARIANT]",
                       help="of a multi-platform spec (arch: a list), build only this platform's image "
                            "(a single image, as for one arch)")

    lock = sub.add_parser("lock", help="resolve an RPM spec's packages and write microimage.lock")
    lock.add_argument("-c", "--config", metavar="SPEC",
                      help="spec file or its directory (default: ./microimage.yaml, else ./smith.yaml)")
    lock.add_argument("--update", action="store_true",
                      help="re-resolve even if the lock matches the spec (pick up repo changes)")
    lock.add_argument("--cache-dir", metavar="DIR", help="as for build")

    trace = sub.add_parser("trace", help="run a command in the spec's sysroot, traced, and propose the spec "
                                         "entries its image lacks")
    trace.add_argument("-c", "--config", metavar="SPEC",
                       help="spec file or its directory (default: ./microimage.yaml, else ./smith.yaml)")
    trace.add_argument("--write", action="store_true",
                       help="add the proposed entries to the spec file (comments and order kept)")
    trace.add_argument("--network", action="store_true", help="share the host's network (default: none)")
    trace.add_argument("--read", metavar="DIR", help="host directory mounted read-only at /read")
    trace.add_argument("--cache-dir", metavar="DIR", help="as for build")
    trace.add_argument("--offline", action="store_true", help="RPM specs: as for build")
    trace.add_argument("--state-dir", metavar="DIR", help="container state (as for run)")
    trace.add_argument("args", nargs=argparse.REMAINDER, metavar="CMD ARGS",
                       help="the command (after --, if it has options)")

    _add_registry_parsers(sub)
    _add_runtime_parsers(sub)
    _add_signing_parsers(sub)

    deps = sub.add_parser("deps", help="print the ELF closure of files, as ld.so would load it")
    deps.add_argument("files", nargs="+", metavar="FILE", help="image paths inside --root")
    deps.add_argument("--root", default="/", help="sysroot the files and libraries are in (default: /)")
    deps.add_argument("--tree", action="store_true", help="print the dependency tree instead of a list")
    deps.add_argument("--allow-missing", action="store_true", help="list what is found; exit 0 on missing")

    inspect = sub.add_parser("inspect", help="print an image's config, digests and files")
    inspect.add_argument("image", metavar="IMAGE",
                         help="OCI layout DIR[:TAG], oci-archive, smith .tar.gz or docker-archive")
    inspect.add_argument("--json", action="store_true", help="print machine-readable JSON")
    inspect.add_argument("--packages", action="store_true",
                         help="list the packages that contributed files (from the provenance record)")

    why = sub.add_parser("why", help="print why a path is in an image, and where it came from")
    why.add_argument("image", metavar="IMAGE",
                     help="OCI layout DIR[:TAG], oci-archive, smith .tar.gz or docker-archive")
    why.add_argument("path", metavar="PATH", help="absolute path in the image")
    diff = sub.add_parser("diff", help="print what changed between two images (exit 0 identical, 1 different,"
                                       " 2 error)")
    for name, what in (("old", "OLD"), ("new", "NEW")):
        diff.add_argument(name, metavar=what,
                          help="OCI layout DIR[:TAG], oci-archive, smith .tar.gz, docker-archive, "
                               "or a registry reference (docker://REF, HOST/REPO:TAG)")
    diff.add_argument("--json", action="store_true", help="print machine-readable JSON (canonical, sorted)")
    diff.add_argument("--package", metavar="NAME", help="only package NAME and the files it owns")
    diff.add_argument("--cache-dir", metavar="DIR", help="where registry images are pulled to (default: the "
                                                          "tool's cache)")
    diff.add_argument("--offline", action="store_true", help="never pull: registry images must be cached")
    diff.add_argument("--plain-http", action="store_true", help="talk plain HTTP to registries")
    diff.add_argument("--insecure", action="store_true", help="do not verify registries' TLS certificates")
    diff.add_argument("--docker-config", metavar="FILE", help="docker config.json with registry credentials")

    sbom = sub.add_parser("sbom", help="print an image's SBOM (CycloneDX 1.6 or SPDX 2.3 JSON)")
    sbom.add_argument("image", metavar="IMAGE",
                      help="OCI layout DIR[:TAG], oci-archive, smith .tar.gz or docker-archive")
    sbom.add_argument("--format", choices=tuple(SBOM_FORMATS), default="cyclonedx",
                      help="cyclonedx (CycloneDX 1.6 JSON, the default) or spdx (SPDX 2.3 JSON)")
    sbom.add_argument("-o", "--output", metavar="FILE", help="write to FILE (atomically) instead of stdout")
    _add_platform_options(sub)
    return parser


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (exit 143 after the clean-up that Ctrl-C gets)."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated()


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None, environ: dict[str, str] | None = None) -> int:
    """Run the CLI.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        stdout: where results go (default: ``sys.stdout``).
        stderr: where warnings and errors go (default: ``sys.stderr``).
        environ: the environment (default: ``os.environ``).

    Returns:
        The exit code.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    env = os.environ if environ is None else environ
    args = _parse_args(list(sys.argv[1:] if argv is None else argv))
    # diff keeps 1 for "different": its errors exit 2, as diff(1) and cmp(1) do
    return guarded(lambda: _dispatch(args, out, err, env), err,
                   error_code=2 if args.command in ("diff", "verify") else None)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; for ``debug``, everything after the first ``--`` is the command.

    argparse cannot take options after ``debug NAME`` and then ``-- CMD`` (the
    command's positional is filled when NAME is), so the command is split off first.
    """
    if argv[:1] == ["debug"] and "--" in argv:
        split = argv.index("--")
        parser = _parser()
        args = parser.parse_args(argv[:split])
        if args.command_args:  # NAME and another word before --
            parser.error(f"unrecognized arguments: {' '.join(args.command_args)}")
        args.command_args = argv[split + 1:]
        return args
    return _parser().parse_args(argv)


def _dispatch(args: argparse.Namespace, out: TextIO, err: TextIO,
              env: dict[str, str] | os._Environ[str]) -> int:
    if args.command == "build":
        return _build(args, out, err, env)
    if args.command == "deps":
        return _deps(args, out, err)
    if args.command == "lock":
        return _lock(args, out)
    if args.command == "trace":
        return _trace(args, out, err)
    if args.command in ("run", "ps", "stop", "rm", "debug"):
        return _runtime_command(args, out)
    if args.command == "push":
        return _push(args, out, err)
    if args.command == "pull":
        return _pull(args, out, err)
    if args.command == "why":
        return _why(args, out)
    if args.command == "sbom":
        return _sbom(args, out, env)
    if args.command == "diff":
        return _diff(args, out)
    if args.command in ("sign", "verify"):
        return _signing_command(args, out)
    return _inspect(args, out)


def guarded(action: Callable[[], int], err: TextIO, prog: str = "microcontainer",
            error_code: int | None = None) -> int:
    """Run ``action``, turning user errors, I/O errors and signals into exit codes.

    A :class:`MicrocontainerError` or ``OSError`` prints ``PROG: error: MESSAGE`` on
    one line (no traceback); SIGTERM unwinds like Ctrl-C so ``finally`` blocks
    remove temporary outputs.

    Args:
        action: the command; returns its exit code.
        err: where errors go.
        prog: the program name errors are prefixed with.
        error_code: the exit code of every user or I/O error, instead of the
            error's own (``diff`` reserves 1 for "different").

    Returns:
        The exit code.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        # SIGTERM unwinds like Ctrl-C, so `finally` blocks remove temporary outputs
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return action()
    except MicrocontainerError as error:
        print(f"{prog}: error: {error}", file=err)
        return error.exit_code if error_code is None else error_code
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as a SIGPIPE'd tool does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except OSError as error:
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prog}: error: {where}{error.strerror or error}", file=err)
        return 1 if error_code is None else error_code
    except KeyboardInterrupt as error:
        if isinstance(error, _Terminated):
            print(f"{prog}: terminated", file=err)
            return 128 + signal.SIGTERM
        print(f"{prog}: interrupted", file=err)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _build(args: argparse.Namespace, out: TextIO, err: TextIO, env: dict[str, str] | os._Environ[str]) -> int:
    from microcontainer_tool.build import build_image
    from microcontainer_tool.oci.layout import split_reference
    from microcontainer_tool.spec.imagespec import load_spec

    spec = load_spec(args.config)
    epoch = source_date_epoch(env)
    args.name, args.tag = split_reference(args.name, args.tag)
    if spec.platforms:
        from microcontainer_tool.platformbuild import select_platform

        if args.platform is None:
            return _build_platforms(spec, args, out, err, epoch, env)
        spec = select_platform(spec, args.platform)
    elif args.platform is not None:
        from microcontainer_tool.errors import SpecError

        raise SpecError(f"{spec.where('arch')}: --platform chooses among the platforms of a spec whose "
                        "arch is a list; this spec builds one image")
    if args.attest or args.sign:
        _check_signable(args)
    with _cache_repo(args, err, env) as shared:
        result = build_image(spec, args.output, epoch=epoch, **_build_options(args, shared))
    for warning in result.warnings:
        print(f"microcontainer: warning: {warning}", file=err)
    sbom = (_write_sbom(result, args.sbom, epoch, stamp=bool(env.get("SOURCE_DATE_EPOCH")))
            if args.sbom else "")
    signing = _attest_and_sign(args, spec, result, env) if args.attest or args.sign else []
    if args.quiet:
        print(result.manifest_digest, file=out)
    else:
        print(f"{result.output} ({result.format}): {result.files} entries, layer {result.layer.size} bytes",
              file=out)
        print(f"manifest {result.manifest_digest}", file=out)
        print(f"config   {result.config_digest}", file=out)
        print(f"layer    {result.layer.digest} (diff_id {result.layer.diff_id})", file=out)
        if sbom:
            print(f"sbom     {sbom}", file=out)
        if shared is not None:
            from microcontainer_tool.registry.sharedcache import describe

            print(f"cache    {describe(shared)}", file=out)
        for line in signing:
            print(f"signing  {line}", file=out)
    if args.probe is not None:
        return _probe(result, args, err)
    return 0


def _build_platforms(spec: Any, args: argparse.Namespace, out: TextIO, err: TextIO, epoch: int,
                     env: dict[str, str] | os._Environ[str]) -> int:
    """``build`` of a multi-platform spec: one image per platform, written as one image index."""
    from microcontainer_tool.errors import UnsupportedError
    from microcontainer_tool.platformbuild import build_platforms

    for flag, given in (("--sbom", args.sbom), ("--probe", args.probe), ("--attest", args.attest),
                        ("--sign", args.sign)):
        if given:
            raise UnsupportedError(f"{flag} is not supported for a multi-platform build yet: "
                                   "give --platform to build one platform")
    with _cache_repo(args, err, env) as shared:
        result = build_platforms(spec, args.output, epoch=epoch, **_build_options(args, shared))
    for warning in result.warnings:
        print(f"microcontainer: warning: {warning}", file=err)
    if args.quiet:
        print(result.index_digest, file=out)
        return 0
    print(f"{result.output} ({result.format}): image index of {len(result.builds)} platforms", file=out)
    print(f"index    {result.index_digest}", file=out)
    for platform, build in zip(result.platforms, result.builds, strict=True):
        print(f"{platform:<16} manifest {build.manifest_digest}: {build.files} entries, "
              f"layer {build.layer.size} bytes", file=out)
    return 0


def _trace(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """``trace``: run the command in the sysroot traced; print (and with ``--write`` add) the proposals."""
    from microcontainer_tool.build import trace_spec
    from microcontainer_tool.closure.proposals import spec_additions
    from microcontainer_tool.spec.additions import add_to_spec_file
    from microcontainer_tool.spec.imagespec import find_spec, load_spec

    command = list(args.args)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise SpecError("trace: give the command to run (trace [OPTIONS] -- CMD ARGS...)")
    path = find_spec(args.config)
    spec = load_spec(path)
    report = trace_spec(spec, command, cache_dir=args.cache_dir, read_dir=args.read, network=args.network,
                        state_dir=args.state_dir, offline=args.offline)
    for line in report.lines():
        print(line, file=out)
    if report.exit_code != 0:
        print(f"microcontainer: warning: `{' '.join(command)}` exited with status {report.exit_code} "
              "in the sysroot: the proposals cover what it did until then", file=err)
    if args.write and report.missing:
        added = add_to_spec_file(path, spec_additions(report.missing))
        print(f"trace: added {added} entries to {path}", file=out)
    return 0


def _probe(result: Any, args: argparse.Namespace, err: TextIO) -> int:
    """``build --probe``: run it, print the report on ``err``; fail unless it passed or ``--probe-warn``."""
    from microcontainer_tool.build import probe_build
    from microcontainer_tool.errors import ProbeError

    report = probe_build(result, args.probe, cache_dir=args.cache_dir, read_dir=args.probe_read, tag=args.tag)
    for line in report.lines():
        print(f"microcontainer: {line}", file=err)
    if report.passed:
        return 0
    reasons = []
    if report.exit_code != 0:
        reasons.append(f"exit status {report.exit_code}")
    if report.missing:
        reasons.append(f"{len(report.missing)} missing paths")
    message = f"probe `{args.probe}` failed ({', '.join(reasons)}); the image {result.output} was written"
    if args.probe_warn:
        print(f"microcontainer: warning: {message}", file=err)
        return 0
    raise ProbeError(message)


def _write_sbom(result: Any, sbom_format: str, epoch: int, stamp: bool) -> str:
    """Write the output's SBOM beside it (atomically); attach it to an OCI layout. Return what was done."""
    from microcontainer_tool.oci.referrers import attach
    from microcontainer_tool.reports.sbom import render_sbom, write_file

    media_type, suffix = SBOM_FORMATS[sbom_format]
    data = render_sbom(result.output, sbom_format, epoch)
    path = os.path.normpath(result.output) + suffix
    write_file(path, data)
    if result.format != "oci":
        return path
    desc = attach(result.output, result.manifest_digest, data, media_type, epoch=epoch if stamp else None,
                  title="sbom" + suffix)
    return f"{path}, attached as {desc.digest}"


DEADLINE_HELP = ("seconds each manifest or blob download may take in all, plus 1 s per 256 KiB of its "
                 "declared size (default: 300)")


def _size(text: str) -> int:
    """An argparse type: a positive size (``parse_size``)."""
    from microcontainer_tool.oci.layer import parse_size

    try:
        return parse_size(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive_int(text: str) -> int:
    """An argparse type: a positive whole number."""
    if not text.strip().isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive whole number")
    return int(text)


def _positive_seconds(text: str) -> float:
    """An argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _add_cache_repo_options(build: argparse.ArgumentParser) -> None:
    build.add_argument("--cache-repo", metavar="REGISTRY/REPO",
                       help="share layers and RPM payloads through this registry repository: look each "
                            "layer up before building it, store what was built (default: $MCT_CACHE_REPO); "
                            "every entry is checked before use; --plain-http, --insecure and "
                            "--docker-config apply to it too")
    build.add_argument("--cache-repo-read-only", action="store_true",
                       help="only read the --cache-repo, never write to it (untrusted CI; "
                            "also $MCT_CACHE_REPO_READONLY=1)")


@contextlib.contextmanager
def _cache_repo(args: argparse.Namespace, err: TextIO,
                env: dict[str, str] | os._Environ[str]) -> Iterator[Any]:
    """The build's shared cache (``--cache-repo``, else ``$MCT_CACHE_REPO``), or None; closed after."""
    text = args.cache_repo or env.get("MCT_CACHE_REPO", "")
    if not text:
        yield None
        return
    from microcontainer_tool.registry.sharedcache import open_shared_cache

    read_only = args.cache_repo_read_only or env.get("MCT_CACHE_REPO_READONLY", "") not in ("", "0")
    shared = open_shared_cache(text, read_only=read_only, plain_http=args.plain_http, insecure=args.insecure,
                               docker_config=args.docker_config, compression=args.compression,
                               warn=lambda line: print(f"microcontainer: warning: {line}", file=err))
    try:
        yield shared
    finally:
        shared.client.close()


def _build_options(args: argparse.Namespace, shared: Any) -> dict[str, Any]:
    """The keyword arguments ``build`` gives the pipeline (one platform or several)."""
    from microcontainer_tool.oci.layer import layer_limits
    from microcontainer_tool.registry.imagecache import RegistryOptions

    return {"fmt": args.format, "tag": args.tag, "name": args.name, "compression": args.compression,
            "allow_missing": args.allow_missing, "layer_cache": _layer_cache(args, shared),
            "cache_dir": args.cache_dir, "offline": args.offline, "shared_packages": shared,
            "registry": RegistryOptions(plain_http=args.plain_http, insecure=args.insecure,
                                        docker_config=args.docker_config, deadline=args.deadline),
            "layer_limits": layer_limits(args.max_layer_size, args.max_layer_ratio)}


def _layer_cache(args: argparse.Namespace, shared: Any) -> Any:
    """The build's layer cache: ``--layer-cache DIR``, or the tool's cache when a cache repo is used."""
    if not args.layer_cache and shared is None:
        return None
    from microcontainer_tool.hostfs.cachedir import default_cache_dir
    from microcontainer_tool.oci.layercache import LayerCache

    return LayerCache(args.layer_cache or args.cache_dir or default_cache_dir(), remote=shared)

def _add_platform_options(sub: Any) -> None:
    """``--platform`` on the commands that read one image of a multi-platform index."""
    for command in ("run", "inspect", "why", "sbom", "diff", "push"):
        what = ("push only this platform's image (default: the whole index)" if command == "push" else
                "the image of a multi-platform index (default: this machine's, else the first)")
        sub.choices[command].add_argument("--platform", metavar="[OS/]ARCH[/VARIANT]", help=what)


def _add_registry_options(parser: argparse.ArgumentParser) -> None:
    """The options of every command that talks to a registry (credentials, TLS, timeouts)."""
    parser.add_argument("-u", "--username",
                        help="registry user; the password is read from standard input")
    parser.add_argument("--docker-config", metavar="PATH",
                        help="config.json or its directory (default: $DOCKER_CONFIG or ~/.docker)")
    parser.add_argument("--plain-http", action="store_true", help="talk HTTP, not HTTPS, to the registry")
    parser.add_argument("--insecure", action="store_true",
                        help="do not verify the registry's TLS certificate")
    parser.add_argument("--timeout", type=float, default=30, metavar="SECONDS",
                        help="connect and read timeout of each request (default: 30)")
    parser.add_argument("--deadline", type=_positive_seconds, default=300, metavar="SECONDS",
                        help=DEADLINE_HELP)
    parser.add_argument("--retries", type=int, default=3,
                        help="attempts for connection errors and 5xx answers (default: 3)")


def _add_registry_parsers(sub: Any) -> None:
    common = _add_registry_options

    push = sub.add_parser("push", help="push an image to a registry")
    push.add_argument("image", metavar="IMAGE",
                      help="OCI layout DIR[:TAG], oci-archive, smith .tar.gz or docker-archive")
    push.add_argument("ref", metavar="REF", help="host[:port]/repo[:tag] (Docker Hub by default)")
    push.add_argument("--docker-media-types", action="store_true",
                      help="push a Docker schema 2 manifest "
                           "(changes the manifest digest; the pushed one is printed)")
    push.add_argument("--mount-from", metavar="REPO",
                      help="repository on the same registry to mount blobs from")
    push.add_argument("-q", "--quiet", action="store_true", help="print only the manifest digest")
    common(push)
    pull = sub.add_parser("pull", help="pull an image into an OCI layout or archive")
    pull.add_argument("ref", metavar="REF", help="host[:port]/repo[:tag][@sha256:...]")
    pull.add_argument("-o", "--output", metavar="OUT", required=True,
                      help="layout DIR, OUT.tar or OUT.tar.gz")
    pull.add_argument("--tag", metavar="TAG",
                      help="tag the image gets in OUT (default: REF's tag, latest for a pull by digest)")
    pull.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                      help="which image of an index (default: this machine's)")
    common(pull)


def _add_runtime_parsers(sub: Any) -> None:
    state_help = ("container state "
                  "(default: /run/microcontainer as root, else $XDG_RUNTIME_DIR/microcontainer)")
    run = sub.add_parser("run", help="run an image as a microcontainer (read-only root, no capabilities)")
    run.add_argument("image", metavar="IMAGE",
                     help="OCI layout DIR[:TAG], oci-archive, smith .tar.gz or docker-archive")
    run.add_argument("args", nargs="*", metavar="ARGS", help="after --: replace the image's Cmd")
    run.add_argument("--write", metavar="DIR", help="host directory mounted read-write at /write")
    run.add_argument("--read", metavar="DIR", help="host directory mounted read-only at /read")
    run.add_argument("-e", "--env", action="append", default=[], metavar="NAME[=VALUE]",
                     help="set an environment variable (bare NAME: copy it from here); repeatable")
    run.add_argument("-u", "--user", metavar="USER[:GROUP]", help="run as this user (default: the image's)")
    run.add_argument("--net", choices=("none", "host"), default="none",
                     help="none: own network namespace, loopback only (default); host: the host's")
    run.add_argument("-d", "--detach", action="store_true", help="run in the background (see ps, stop, rm)")
    run.add_argument("--name", help="container name (default: generated mc-XXXXXXXXXXXX)")
    run.add_argument("--runtime", default="runc", help="OCI runtime binary (default: runc)")
    run.add_argument("--no-userns", action="store_true", help="no user namespace: container ids are host ids")
    run.add_argument("--debug", action="store_true", help="mount the debug toolbox at /dev/crashcart")
    run.add_argument("--toolbox", metavar="PROGRAMS|SPEC|DIR|IMAGE",
                     help="toolbox for --debug, as for debug --toolbox (default: busybox, strace...)")
    run.add_argument("--cache-dir", metavar="DIR", help="as for build (unpacked images, toolboxes)")
    run.add_argument("--state-dir", metavar="DIR", help=state_help)
    ps = sub.add_parser("ps", help="list containers")
    ps.add_argument("--state-dir", metavar="DIR", help=state_help)
    ps.add_argument("--json", action="store_true", help="print machine-readable JSON")
    stop = sub.add_parser("stop", help="stop a container: SIGTERM, then SIGKILL")
    stop.add_argument("name", metavar="NAME")
    stop.add_argument("-t", "--timeout", type=float, default=10, help="seconds before SIGKILL (default: 10)")
    stop.add_argument("--state-dir", metavar="DIR", help=state_help)
    rm = sub.add_parser("rm", help="remove a stopped container")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("-f", "--force", action="store_true", help="kill it first if it runs")
    rm.add_argument("--state-dir", metavar="DIR", help=state_help)
    _add_debug_parser(sub, state_help)


def _add_debug_parser(sub: Any, state_help: str) -> None:
    debug = sub.add_parser("debug", help="run a command in a running container with a side-loaded toolbox")
    debug.add_argument("name", metavar="NAME", nargs="?",
                       help="container: ours (default), a runc id (--runtime-root) or podman's (--podman)")
    debug.add_argument("command_args", nargs="*", metavar="CMD", help="after --: command (default: sh)")
    debug.add_argument("--toolbox", metavar="PROGRAMS|SPEC|DIR|IMAGE",
                       help="programs (strace,gdb,lsof,ss), a toolbox.yaml, a directory of static tools or an"
                            " image (default: busybox, strace, and gdb, tcpdump, lsof when installed)")
    debug.add_argument("--toolbox-root", metavar="DIR|IMAGE",
                       help="sysroot or image the --toolbox programs are taken from (default: /)")
    target = debug.add_mutually_exclusive_group()
    target.add_argument("--runtime-root", metavar="DIR",
                        help="NAME is a runc container id in this runc --root state dir (runc's default:"
                             " /run/runc)")
    target.add_argument("--pid", type=int, metavar="PID", help="debug this process (no NAME)")
    target.add_argument("--podman", action="store_true", help="NAME is a podman container")
    debug.add_argument("--podman-option", action="append", default=[], metavar="OPT",
                       help="podman global option for --podman (--podman-option=--root=DIR); repeatable")
    mode = debug.add_mutually_exclusive_group()
    mode.add_argument("-e", "--exec", dest="mode", action="store_const", const="exec",
                      help="run CMD through the runtime (runc/podman exec: the container's user and limits)")
    mode.add_argument("--mount-only", dest="mode", action="store_const", const="mount",
                      help="mount the toolbox at /dev/crashcart and leave it (for several sessions)")
    mode.add_argument("--unmount", dest="mode", action="store_const", const="unmount",
                      help="remove a toolbox left by --mount-only")
    debug.add_argument("--runtime", default="runc", help="runc binary for --runtime-root (default: runc)")
    debug.add_argument("--cache-dir", metavar="DIR", help="as for build")
    debug.add_argument("--state-dir", metavar="DIR", help=state_help)


def _runtime_command(args: argparse.Namespace, out: TextIO) -> int:
    from microcontainer_tool.hostfs.cachedir import default_cache_dir
    from microcontainer_tool.runtime import containers as runtime

    state = args.state_dir or runtime.default_state_dir()
    if args.command == "run":
        return runtime.run(args.image, name=args.name, detach=args.detach, runtime=args.runtime,
                           state_dir=state, cache_dir=args.cache_dir or default_cache_dir(), debug=args.debug,
                           toolbox=args.toolbox, args=args.args or None, env=args.env, user=args.user,
                           write_dir=args.write,
                           read_dir=args.read, net=args.net, userns=not args.no_userns,
                           platform=args.platform)
    if args.command == "ps":
        infos = runtime.ps(state)
        if args.json:
            print(json.dumps([info.__dict__ for info in infos], indent=2), file=out)
        else:
            print(f"{'NAME':<20} {'STATUS':<8} {'PID':>7}  {'IMAGE DIGEST':<19}  IMAGE", file=out)
            for info in infos:
                print(f"{info.name:<20} {info.status:<8} {info.pid or '-':>7}  "
                      f"{info.digest[7:26]:<19}  {info.image}", file=out)
        return 0
    if args.command == "stop":
        runtime.stop(args.name, state, timeout=args.timeout)
        return 0
    if args.command == "rm":
        runtime.rm(args.name, state, force=args.force)
        return 0
    return _debug(args, state, out)


def _debug(args: argparse.Namespace, state: str, out: TextIO) -> int:
    from microcontainer_tool.errors import RunError
    from microcontainer_tool.hostfs.cachedir import default_cache_dir
    from microcontainer_tool.runtime import targets
    from microcontainer_tool.runtime.debug import debug_target

    command = list(args.command_args)
    if args.pid is not None:
        if args.name is not None:  # "debug --pid N -- CMD": argparse gave CMD's first word to NAME
            command.insert(0, args.name)
        target = targets.process(args.pid)
    elif args.name is None:
        raise RunError("debug: give a container NAME, or --pid PID")
    elif args.runtime_root is not None:
        target = targets.runc_container(args.name, args.runtime_root, args.runtime)
    elif args.podman:
        target = targets.podman_container(args.name, options=args.podman_option)
    else:
        target = targets.our_container(args.name, state)
    cache = args.cache_dir or default_cache_dir()
    return debug_target(target, args.toolbox, command or None, cache_dir=cache, mode=args.mode or "enter",
                        toolbox_root=args.toolbox_root, out=out)


def _client(args: argparse.Namespace, registry: str) -> Any:
    from microcontainer_tool.registry.auth import load_credentials, read_password
    from microcontainer_tool.registry.client import RegistryClient

    password = read_password(sys.stdin) if args.username else None
    creds = load_credentials(registry, username=args.username, password=password,
                             docker_config=args.docker_config)
    return RegistryClient(registry, auth=creds, plain_http=args.plain_http, insecure=args.insecure,
                          timeout=args.timeout, retries=args.retries, deadline=args.deadline)


def _push(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from microcontainer_tool.registry.reference import Reference
    from microcontainer_tool.registry.transfer import push, tty_progress

    ref = Reference.parse(args.ref)
    with _client(args, ref.registry) as client:
        result = push(args.image, ref, client, docker_media_types=args.docker_media_types,
                      mount_from=args.mount_from, progress=tty_progress(err), platform=args.platform)
        signed = _sign_pushed(args, client, ref, result) if args.sign else []
    if args.quiet:
        print(result.digest, file=out)
    else:
        print(f"pushed {result.reference}", file=out)
        print(f"blobs  {result.uploaded} uploaded ({result.bytes_uploaded} bytes), {result.skipped} present, "
              f"{result.mounted} mounted", file=out)
        if result.referrers:
            print(f"referrers {result.referrers} pushed (SBOMs and other artifacts of the image)", file=out)
        for line in signed:
            print(f"signed {line}", file=out)
    return 0


def _pull(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from microcontainer_tool.registry.reference import Reference
    from microcontainer_tool.registry.transfer import pull, tty_progress

    ref = Reference.parse(args.ref)
    with _client(args, ref.registry) as client:
        digest = pull(ref, args.output, client, args.platform, progress=tty_progress(err), tag=args.tag)
    print(f"{args.output}: {ref.name}@{digest}", file=out)
    return 0


def _lock(args: argparse.Namespace, out: TextIO) -> int:
    from microcontainer_tool.hostfs.cachedir import default_cache_dir
    from microcontainer_tool.sources.rpm.lock import read_lock, write_lock
    from microcontainer_tool.sources.rpm.root import lock_packages, lock_path, spec_inputs_digest
    from microcontainer_tool.sources.rpm.yumrepos import with_system_repos
    from microcontainer_tool.spec.imagespec import load_spec, platform_specs

    loaded = load_spec(args.config)
    if not loaded.packages:
        raise SpecError(f"{loaded.source}: no 'package' or 'packages' to lock")
    for one in platform_specs(loaded):  # a multi-platform spec: one lock per architecture
        spec = with_system_repos(one)
        path = lock_path(spec)
        if os.path.exists(path) and not args.update:
            if read_lock(path).inputs_digest == spec_inputs_digest(spec):
                print(f"{path} is up to date with the spec (--update to take newer packages)", file=out)
                continue
        lock = lock_packages(spec, args.cache_dir or default_cache_dir())
        write_lock(path, lock)
        print(f"{path}: {len(lock.packages)} packages", file=out)
        for package in lock.packages:
            epoch = f"{package.epoch}:" if package.epoch else ""
            print(f"  {package.name}-{epoch}{package.version}-{package.release}.{package.arch} "
                  f"({package.repo})", file=out)
    return 0


def _deps(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from microcontainer_tool.closure.ldd import LibraryResolver
    from microcontainer_tool.sources.sysroot import SysRoot

    root = SysRoot(args.root)
    resolver = LibraryResolver(root)
    closure = resolver.closure(args.files)
    if not closure.objects:
        raise MicrocontainerError(f"none of {', '.join(args.files)} is an ELF file in {args.root}")
    missing = closure.missing()
    if args.tree:
        _print_tree(closure, out)
    else:
        paths = set(closure.libraries())
        for path in sorted(paths):
            print(path, file=out)
    if missing:
        message = resolver.format_missing(closure)
        if not args.allow_missing:
            raise MicrocontainerError(message)
        print(f"microcontainer: warning: {message}", file=err)
    return 0


def _print_tree(closure: object, out: TextIO) -> None:
    from microcontainer_tool.closure.ldd import Closure

    assert isinstance(closure, Closure)
    children: dict[str, list[tuple[str, str | None, str]]] = {}
    for dep in closure.edges:
        children.setdefault(dep.needer, []).append((dep.name, dep.path, dep.rule))
    seen: set[str] = set()

    def walk(path: str, depth: int) -> None:
        for name, found, rule in children.get(path, []):
            shown = found if found is not None else "not found"
            again = found is not None and found in seen
            print(f"{'    ' * depth}{name} => {shown} [{rule}]{' (see above)' if again else ''}", file=out)
            if found is not None and not again:
                seen.add(found)
                walk(found, depth + 1)

    for root_path in closure.roots:
        print(root_path, file=out)
        seen.add(root_path)
        walk(root_path, 1)


def _why(args: argparse.Namespace, out: TextIO) -> int:
    from microcontainer_tool.model.provenance import package_line, read_record, why

    record = read_record(args.image, args.platform)
    for line in why(record, args.path):
        print(line, file=out)
    print(package_line(record, args.path), file=out)
    return 0


def _sbom(args: argparse.Namespace, out: TextIO, env: dict[str, str] | os._Environ[str]) -> int:
    from microcontainer_tool.reports.sbom import render_sbom, write_file

    data = render_sbom(args.image, args.format, source_date_epoch(env), args.platform)
    if args.output is not None:
        write_file(args.output, data)
    elif getattr(out, "buffer", None) is not None:
        out.flush()
        out.buffer.write(data)
        out.buffer.flush()
    else:
        out.write(data.decode("utf-8"))
    return 0


def _packages(args: argparse.Namespace, out: TextIO) -> int:
    from microcontainer_tool.model.provenance import read_record

    packages = read_record(args.image, args.platform)["packages"]
    rows = [(p["name"], (f"{p['epoch']}:" if p.get("epoch") and p["type"] == "rpm" else "") + p["version"]
             + (f"-{p['release']}" if p.get("release") else ""),
             p["arch"], p["type"], p.get("license") or "-")
            for p in packages.values()]
    rows.sort()
    if args.json:
        json.dump([packages[k] for k in sorted(packages)], out, indent=2, sort_keys=True)
        out.write("\n")
        return 0
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(("NAME", "VERSION", "ARCH", "TYPE"))]
    print(f"{'NAME':<{widths[0]}}  {'VERSION':<{widths[1]}}  {'ARCH':<{widths[2]}}  "
          f"{'TYPE':<{widths[3]}}  LICENSE", file=out)
    for row in rows:
        print(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]:<{widths[2]}}  "
              f"{row[3]:<{widths[3]}}  {row[4]}", file=out)
    return 0


def _inspect(args: argparse.Namespace, out: TextIO) -> int:
    from microcontainer_tool.oci.imageview import open_image

    if args.packages:
        return _packages(args, out)
    view = open_image(args.image, platform=args.platform)
    files = list(view.iter_files())
    index = None
    if view.platform_index is not None:  # a multi-platform image: which index, which platforms
        from microcontainer_tool.oci.imageview import platform_text

        index = {"digest": view.platform_index[0].digest,
                 "platforms": {platform_text(d.platform): d.digest for d in view.platform_index[1]}}
    if args.json:
        data = {
            "manifest_digest": view.manifest_digest,
            "manifest": view.manifest,
            "config": view.config,
            "files": [{"path": f.path, "type": f.type, "mode": f"{f.mode:04o}", "size": f.size,
                       "link": f.linkname} for f in files],
        }
        if index is not None:
            data["index"] = index
        json.dump(data, out, indent=2, sort_keys=True)
        out.write("\n")
        return 0
    config = view.config
    conf = config.get("config", {})
    if index is not None:
        print(f"index     {index['digest']} ({', '.join(index['platforms'])})", file=out)
    print(f"manifest  {view.manifest_digest}", file=out)
    print(f"config    {view.manifest['config']['digest']}", file=out)
    for layer in view.manifest.get("layers", []):
        print(f"layer     {layer['digest']} {layer['size']} bytes {layer['mediaType']}", file=out)
    print(f"platform  {config.get('os')}/{config.get('architecture')}"
          + (f"/{config['variant']}" if config.get("variant") else ""), file=out)
    print(f"created   {config.get('created', '')}", file=out)
    for key in ("User", "Entrypoint", "Cmd", "WorkingDir", "Env", "Labels", "ExposedPorts", "Volumes"):
        if key in conf:
            print(f"{key:<10}{json.dumps(conf[key], sort_keys=True)}", file=out)
    total = sum(f.size for f in files)
    print(f"files     {len(files)} entries, {total} bytes", file=out)
    for f in files:
        link = f" -> {f.linkname}" if f.linkname else ""
        print(f"  {f.type:<8} {f.mode:04o} {f.size:>10}  {f.path}{link}", file=out)
    return 0


def _diff(args: argparse.Namespace, out: TextIO) -> int:
    from microcontainer_tool.hostfs.cachedir import default_cache_dir
    from microcontainer_tool.oci.imageview import open_image
    from microcontainer_tool.registry.imagecache import RegistryOptions, fetch_image
    from microcontainer_tool.reports.diff import compare, only_package, render_json, render_text, summarize
    from microcontainer_tool.sources.image.locate import locate_image

    options = RegistryOptions(plain_http=args.plain_http, insecure=args.insecure,
                              docker_config=args.docker_config)
    summaries = []
    for text in (args.old, args.new):
        local = os.path.exists(text) or os.path.exists(text.rpartition(":")[0] or text)
        location = None if local else locate_image(text, os.getcwd(), directory_ok=False)
        path, label = text, text
        if location is not None and location.local is None:
            path, label = fetch_image(location, args.cache_dir or default_cache_dir(), options,
                                      platform=_registry_platform(args.platform), offline=args.offline)
        with open_image(path, platform=args.platform) as view:
            summaries.append(summarize(view, label))
    result = compare(summaries[0], summaries[1])
    if args.package:
        result = only_package(result, args.package)
    out.write(render_json(result) if args.json else render_text(result))
    return 0 if result["identical"] else 1


def _registry_platform(platform: str | None) -> str:
    """``--platform`` as a registry pull takes it (``os/arch[/variant]``; empty: this machine's)."""
    if not platform:
        return ""
    return platform if "/" in platform else f"linux/{platform}"


# --- signing and provenance (sign, verify, build --attest/--sign, push --sign) ---------------------


def _add_signing_parsers(sub: Any) -> None:
    build = sub.choices["build"]
    build.add_argument("--attest", action="store_true",
                       help="attach a provenance statement (in-toto, SLSA provenance v1) to the image as an "
                            "OCI 1.1 referrer; DSSE-signed with --sign (OCI layouts and oci-archives)")
    build.add_argument("--sign", metavar="KEY",
                       help="sign the image, its SBOM and its attestation with the ECDSA P-256 PEM private "
                            "key KEY (cosign's format), stored as referrers in the layout or oci-archive")
    push = sub.choices["push"]
    push.add_argument("--sign", metavar="KEY", action="append",
                      help="sign the pushed manifest: a PEM private key (cosign: the sha256-<hex>.sig tag "
                           "and a referrer) or gpg:FINGERPRINT (containers simple signing: the registries.d "
                           "lookaside store); repeat for both")
    push.add_argument("--registries.d", dest="registries_d", metavar="DIR",
                      help="registries.d directory naming the lookaside store (default: "
                           "~/.config/containers/registries.d, else /etc/containers/registries.d)")

    def registry_options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--registries.d", dest="registries_d", metavar="DIR",
                            help="registries.d directory naming the lookaside store of GPG signatures")
        _add_registry_options(parser)

    sign = sub.add_parser("sign", help="sign an image (layout, oci-archive or registry reference) with a key")
    sign.add_argument("image", metavar="IMAGE",
                      help="OCI layout DIR[:TAG], FILE.tar, or host[:port]/repo[:tag]")
    sign.add_argument("--key", required=True, metavar="KEY",
                      help="ECDSA P-256 PEM private key (cosign's format), or gpg:FINGERPRINT "
                           "(registry images)")
    sign.add_argument("--identity", metavar="REPO",
                      help="the repository a local image's signature names (default: its name)")
    registry_options(sign)
    verify = sub.add_parser("verify",
                            help="check an image's signature (exit 0 verified, 1 not verified, 2 error)")
    verify.add_argument("image", metavar="IMAGE",
                        help="OCI layout DIR[:TAG], FILE.tar, or host[:port]/repo[:tag]")
    verify.add_argument("--key", required=True, metavar="KEY",
                        help="PEM public key (cosign's format), or gpg:FINGERPRINT (a key in gpg's keyring)")
    verify.add_argument("--attestation", action="store_true",
                        help="also require a provenance statement (build --attest) signed with the key")
    registry_options(verify)


def _is_local_image(text: str) -> bool:
    return os.path.exists(text) or (":" in text and os.path.exists(text.rsplit(":", 1)[0]))


def _check_signable(args: argparse.Namespace) -> None:
    """``build --attest/--sign`` need an output that can hold referrers; fail before building."""
    from microcontainer_tool.oci.layout import format_for_path

    if format_for_path(args.output, args.format) not in ("oci", "oci-archive"):
        raise SpecError("--attest and --sign need an OCI layout or an oci-archive (.tar) output: "
                        "smith .tar.gz and docker-archives cannot carry referrers")
    if args.sign and args.sign.startswith("gpg:"):
        raise SpecError("build --sign takes a PEM key: GPG simple signatures name a registry reference, "
                        "so they are made at push (push --sign gpg:FINGERPRINT)")


def _attest_and_sign(args: argparse.Namespace, spec: Any, result: Any,
                     env: dict[str, str] | os._Environ[str]) -> list[str]:
    from microcontainer_tool.signing.attachments import attest_and_sign

    parameters = {"format": result.format, "compression": args.compression, "tag": args.tag or "latest",
                  "name": args.name or "", "allowMissing": bool(args.allow_missing),
                  "sbom": args.sbom or ""}
    stamp = source_date_epoch(env) if env.get("SOURCE_DATE_EPOCH") else None
    return attest_and_sign(result.output, spec, parameters, attestation=args.attest, key=args.sign,
                           epoch=stamp)


def _sign_pushed(args: argparse.Namespace, client: Any, ref: Any, result: Any) -> list[str]:
    from microcontainer_tool.oci.referrers import referrers
    from microcontainer_tool.signing.attachments import UNSIGNED_TYPES, sign_remote
    from microcontainer_tool.signing.keys import parse_key_spec

    specs = [parse_key_spec(text) for text in args.sign]
    path = args.image.rsplit(":", 1)[0] if not os.path.exists(args.image) else args.image
    others = [d.digest for d in referrers(path, result.digest)
              if getattr(d, "artifact_type", "") not in UNSIGNED_TYPES] \
        if result.referrers and os.path.isdir(path) else []
    lines = []
    for spec in specs:
        done = sign_remote(client, ref, result.digest, spec, args.registries_d)
        lines.append(f"{done.digest} ({done.where})")
        for digest in others if spec.kind == "cosign" else []:
            extra = sign_remote(client, ref, digest, spec, args.registries_d)
            lines.append(f"{extra.digest} (a referrer of the image; {extra.where})")
    return lines


def _signing_command(args: argparse.Namespace, out: TextIO) -> int:
    from microcontainer_tool.signing.keys import parse_key_spec

    spec = parse_key_spec(args.key)
    if _is_local_image(args.image):
        if args.command == "sign":
            from microcontainer_tool.signing.attachments import sign_local

            done = sign_local(args.image, spec, args.identity)
            print(f"signed {done.digest} as {done.identity} in {args.image}"
                  + (f" (and {len(done.referrers)} referrers)" if done.referrers else ""), file=out)
            return 0
        from microcontainer_tool.signing.verify import verify_local

        verdict = verify_local(args.image, spec, args.attestation)
    else:
        from microcontainer_tool.registry.reference import Reference

        ref = Reference.parse(args.image)
        with _client(args, ref.registry) as client:
            if args.command == "sign":
                from microcontainer_tool.signing.attachments import sign_remote
                from microcontainer_tool.signing.verify import resolve

                remote = sign_remote(client, ref, resolve(client, ref), spec, args.registries_d)
                print(f"signed {remote.digest} ({remote.where})", file=out)
                return 0
            from microcontainer_tool.signing.verify import verify_remote

            verdict = verify_remote(client, ref, spec, args.registries_d, args.attestation)
    print(("verified: " if verdict.verified else "not verified: ") + verdict.message, file=out)
    return 0 if verdict.verified else 1


def main_entry() -> None:
    """Console-script entry point."""
    sys.exit(main())
