"""smith's command line: ``microcontainer-smith [upload|download] ...`` over this tool's build, push and pull.

It takes exactly smith 1.1.2's forms, so wrapper scripts that call ``smith``
keep working when ``microcontainer-smith`` is linked or aliased as ``smith``:

* bare ``smith [-c smith.yaml] [-d DIR] [-i image.tar.gz] [-b BUILD] [-f] [-v] [-k]``
  builds: ``-c`` names the spec inside ``-d`` (smith changes into ``-d``
  first), ``-i`` the **output** image file (relative to the current directory,
  format by suffix: ``.tar.gz`` is smith's), ``-b`` a build number written as
  smith's ``com.oracle.smith.build`` annotation on the image's index entry.
  Unlike smith there is no default build number (smith's ``UNIXTIME-HOSTNAME``
  would make every build's bytes differ); ``-f`` is accepted and changes
  nothing (the cache makes every build fast); ``-k`` skips TLS verification
  for registry images the spec names.
* ``smith upload -i IMAGE -r URL [-d]`` pushes (``-d``: Docker media types).
* ``smith download -i IMAGE -r URL`` pulls into ``IMAGE`` (a smith ``.tar.gz``
  by default, tagged ``latest`` as smith's are).
* ``URL`` is ``http(s)://[USER:PASSWORD@]HOST/REPO[:TAG]``: ``http://`` is
  plain HTTP; credentials in it are used, never printed.
* ``-V``/``--version`` (or ``version``) prints the version.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from microcontainer_tool import __version__
from microcontainer_tool.cli import guarded, source_date_epoch

PROG = "microcontainer-smith"
BUILD_ANNOTATION = "com.oracle.smith.build"
"""smith's annotation for ``-b BUILD`` on the image's entry in ``index.json``."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="smith's command line (build, upload, download) over microcontainer-tool")
    parser.add_argument("-c", "--conf", default="smith.yaml",
                        help="spec file name inside --dir (default: smith.yaml)")
    parser.add_argument("-d", "--dir", default=".", help="directory to build the image from (default: .)")
    parser.add_argument("-i", "--image", default="image.tar.gz",
                        help="image file: build's output, upload's input (default: image.tar.gz)")
    parser.add_argument("-b", "--buildnumber", metavar="BUILD",
                        help="build number, written as the com.oracle.smith.build annotation (default: none)")
    parser.add_argument("-f", "--fast", action="store_true", help="accepted for smith; changes nothing")
    _persistent(parser, False)
    sub = parser.add_subparsers(dest="command", metavar="{upload,download,version}")
    upload = sub.add_parser("upload", help="upload an image to a registry")
    upload.add_argument("-i", "--image", default=argparse.SUPPRESS, help="image file (default: image.tar.gz)")
    upload.add_argument("-r", "--remote", required=True, metavar="URL",
                        help="http(s)://[USER:PASSWORD@]HOST/REPO[:TAG] (http:// is plain HTTP)")
    upload.add_argument("-d", "--docker", action="store_true", help="upload with Docker media types")
    _persistent(upload, argparse.SUPPRESS)
    download = sub.add_parser("download", help="download an image from a registry")
    download.add_argument("-i", "--image", default=argparse.SUPPRESS,
                          help="image file written (default: image.tar.gz; a directory name: an OCI layout)")
    download.add_argument("-r", "--remote", required=True, metavar="URL",
                          help="http(s)://[USER:PASSWORD@]HOST/REPO[:TAG] (http:// is plain HTTP)")
    _persistent(download, argparse.SUPPRESS)
    sub.add_parser("version", help="print the version")
    return parser


def _persistent(parser: argparse.ArgumentParser, default: Any) -> None:
    """smith's flags that every command takes (a subcommand's do not reset the top level's)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="accepted for smith")
    parser.add_argument("-V", "--version", action="store_true", default=default, help="print the version")
    parser.add_argument("-k", "--insecure", action="store_true", default=default,
                        help="do not verify registries' TLS certificates")


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None,
         stderr: TextIO | None = None, environ: dict[str, str] | None = None) -> int:
    """Run smith's command line.

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
    args = _parser().parse_args(argv)
    if args.version or args.command == "version":
        print(f"{PROG} {__version__} (smith's command line)", file=out)
        return 0
    if args.command == "upload":
        return guarded(lambda: _upload(args, out, err), err, PROG)
    if args.command == "download":
        return guarded(lambda: _download(args, out, err), err, PROG)
    return guarded(lambda: _build(args, out, err, env), err, PROG)


def _build(args: argparse.Namespace, out: TextIO, err: TextIO, env: dict[str, str] | os._Environ[str]) -> int:
    from microcontainer_tool.build import build_image
    from microcontainer_tool.registry.imagecache import RegistryOptions
    from microcontainer_tool.spec.imagespec import load_spec

    spec = load_spec(os.path.join(args.dir, args.conf))
    annotations = {BUILD_ANNOTATION: args.buildnumber} if args.buildnumber else None
    result = build_image(spec, os.path.abspath(args.image), epoch=source_date_epoch(env),
                         registry=RegistryOptions(insecure=args.insecure), annotations=annotations)
    for warning in result.warnings:
        print(f"{PROG}: warning: {warning}", file=err)
    print(f"{args.image} ({result.format}): {result.files} entries, layer {result.layer.size} bytes",
          file=out)
    print(f"manifest {result.manifest_digest}", file=out)
    return 0


def _client(remote: Any, insecure: bool) -> Any:
    from microcontainer_tool.registry.auth import Credentials, load_credentials
    from microcontainer_tool.registry.client import RegistryClient

    if remote.username or remote.password:
        creds = Credentials(remote.username, remote.password, source="the remote URL")
    else:
        creds = load_credentials(remote.ref.registry)
    return RegistryClient(remote.ref.registry, auth=creds, plain_http=remote.plain_http, insecure=insecure)


def _upload(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from microcontainer_tool.registry.reference import RemoteURL
    from microcontainer_tool.registry.transfer import push, tty_progress

    remote = RemoteURL.parse(args.remote)
    with _client(remote, args.insecure) as client:
        result = push(args.image, remote.ref, client, docker_media_types=args.docker,
                      progress=tty_progress(err))
    print(f"uploaded {result.reference}", file=out)
    return 0


def _download(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from microcontainer_tool.registry.reference import DEFAULT_TAG, RemoteURL
    from microcontainer_tool.registry.transfer import pull, tty_progress

    remote = RemoteURL.parse(args.remote)
    with _client(remote, args.insecure) as client:
        digest = pull(remote.ref, args.image, client, progress=tty_progress(err), tag=DEFAULT_TAG)
    print(f"{args.image}: {remote.ref.name}@{digest}", file=out)
    return 0


def main_entry() -> None:
    """Console-script entry point (``microcontainer-smith``)."""
    sys.exit(main())
