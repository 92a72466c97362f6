"""Packs: dlopen'ed files (gconv, ssl, nss, tz, locale) found in the sysroot, with their closure."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import (
    REPO,
    SHARED_RPMS,
    assert_one_line_error,
    copy_closure,
    ldd_files,
    make_repo,
    needs_shared_rpms,
    run_cli,
    runc_run,
)

from microcontainer_tool.assembly import packs
from microcontainer_tool.closure.elf import undefined_symbols
from microcontainer_tool.errors import SpecError
from microcontainer_tool.model.provenance import read_record
from microcontainer_tool.spec.imagespec import PACK_NAMES, parse_spec

EXAMPLE = REPO / "examples" / "iconv"


def host_libc() -> Path:
    """The host's libc.so.6 as ``ldd /usr/bin/iconv`` finds it, symlinks resolved."""
    out = subprocess.run(["ldd", "/usr/bin/iconv"], capture_output=True, text=True, check=True).stdout
    line = next(line for line in out.splitlines() if "libc.so.6 =>" in line)
    return Path(os.path.realpath(line.split("=>")[1].split()[0]))


def build(spec: Path, out: Path) -> None:
    proc = run_cli("build", "-c", str(spec), "-o", str(out))
    assert proc.returncode == 0, proc.stderr


def image_files(image: Path) -> dict[str, dict]:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return {f["path"]: f for f in json.loads(proc.stdout)["files"]}


def copy_example(tmp_path: Path, extra: str) -> Path:
    """The iconv example with ``extra`` spec lines appended."""
    spec = tmp_path / "iconv"
    shutil.copytree(EXAMPLE, spec)
    with open(spec / "microimage.yaml", "a") as handle:
        handle.write(extra)
    return spec


# --------------------------------------------------------------------------- the symbol reader


@pytest.mark.parametrize("path", ["/usr/bin/iconv", "libc", "/usr/bin/curl", "/usr/bin/python3"])
def test_undefined_symbols_match_nm(path: str) -> None:
    target = str(host_libc()) if path == "libc" else os.path.realpath(path)
    nm = subprocess.run(["nm", "-D", "--undefined-only", target], capture_output=True, text=True, check=True)
    expected = {line.split()[-1].split("@")[0] for line in nm.stdout.splitlines() if line.strip()}
    assert undefined_symbols(target) == expected
    assert len(expected) > 10


def test_iconv_imports_iconv_open_and_libc_does_not() -> None:
    assert packs.ICONV_SYMBOL in undefined_symbols("/usr/bin/iconv")
    assert packs.ICONV_SYMBOL not in undefined_symbols(str(host_libc()))  # libc defines it
    assert undefined_symbols(str(EXAMPLE / "microimage.yaml")) == frozenset()  # not ELF


# --------------------------------------------------------------------------- spec keys


def test_pack_names_are_the_spec_names() -> None:
    assert tuple(sorted(packs.PACKS)) == PACK_NAMES


def test_unknown_pack_is_a_spec_error_with_its_line() -> None:
    with pytest.raises(SpecError, match=r"^spec.yaml:4: unknown pack 'iconv' \(known: gconv, locale, nss"):
        parse_spec("from: /\npaths: [/usr/bin/iconv]\npacks:\n  - iconv\n", "spec.yaml", "/nonexistent")
    with pytest.raises(SpecError, match=r"^spec.yaml:2: auto_packs must be true or false"):
        parse_spec("paths: [/x]\nauto_packs: sometimes\n", "spec.yaml", "/nonexistent")
    spec = parse_spec("paths: [/x]\npacks: [tz, gconv, tz]\nauto_packs: false\n", "s", "/nonexistent")
    assert spec.packs == ("gconv", "tz") and spec.auto_packs is False
    assert parse_spec("paths: [/x]\n", "s", "/nonexistent").auto_packs is True


def test_unknown_pack_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "packs: [gconv, fonts]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, "microimage.yaml:9", "unknown pack 'fonts'")


# --------------------------------------------------------------------------- gconv


@pytest.fixture(scope="module")
def iconv_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("iconv") / "image"
    build(EXAMPLE, out)
    return out


def test_iconv_converts_to_euc_jp_under_runc(iconv_image: Path, tmp_path: Path) -> None:
    expected = subprocess.run(["iconv", "-f", "UTF-8", "-t", "EUC-JP", str(EXAMPLE / "rootfs/read/text.txt")],
                              capture_output=True, check=True).stdout
    assert expected.startswith(b"\xc6\xfc\xcb\xdc\xb8\xec")  # 日本語 in EUC-JP
    proc = runc_run(iconv_image, "latest", tmp_path, text=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == expected


def test_gconv_pack_files_and_their_provenance(iconv_image: Path) -> None:
    gconv = host_libc().parent / "gconv"
    files = image_files(iconv_image)
    want = {str(p) for p in gconv.rglob("*") if p.is_file()}
    assert {f"{gconv}/gconv-modules", f"{gconv}/gconv-modules.cache", f"{gconv}/EUC-JP.so"} <= want
    assert any(p.endswith(".conf") and "/gconv-modules.d/" in p for p in want)
    assert want <= set(files)
    proc = run_cli("why", str(iconv_image), f"{gconv}/EUC-JP.so")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == (
        f"{gconv}/EUC-JP.so <- pack gconv (automatic: /usr/bin/iconv imports iconv_open)"
        " <- paths: /usr/bin/iconv")
    assert proc.stdout.splitlines()[-1].startswith("package: libc6 ")
    # the modules' own DT_NEEDED closure (libJIS.so through RUNPATH=$ORIGIN) is recorded
    record = read_record(str(iconv_image))
    reasons = record["files"][f"{gconv}/libJIS.so"]["why"]
    assert {"kind": "needed", "by": f"{gconv}/EUC-JP.so", "name": "libJIS.so",
            "rule": "RUNPATH"} in reasons
    assert reasons[0] == {"kind": "pack", "selector": "gconv", "by": "/usr/bin/iconv",
                          "rule": "automatic: /usr/bin/iconv imports iconv_open"}


def test_without_the_pack_iconv_fails(tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "auto_packs: false\n")
    out = tmp_path / "image"
    build(spec, out)
    assert not any("/gconv/" in p for p in image_files(out))
    proc = runc_run(out, "latest", tmp_path, text=False)
    assert proc.returncode != 0
    assert b"failed to start conversion processing" in proc.stderr, proc.stderr


def test_explicit_gconv_pack_with_auto_packs_off(tmp_path: Path) -> None:
    spec = copy_example(tmp_path, "auto_packs: false\npacks: [gconv]\n")
    out = tmp_path / "image"
    build(spec, out)
    gconv = host_libc().parent / "gconv"
    assert f"{gconv}/EUC-JP.so" in image_files(out)
    proc = run_cli("why", str(out), f"{gconv}/gconv-modules")
    assert proc.stdout.splitlines()[0] == f"{gconv}/gconv-modules <- pack gconv (packs: gconv)"
    proc = runc_run(out, "latest", tmp_path, text=False)
    assert proc.returncode == 0 and proc.stdout.startswith(b"\xc6\xfc"), proc.stderr


def test_excludes_prune_a_pack(tmp_path: Path) -> None:
    gconv = host_libc().parent / "gconv"
    spec = copy_example(tmp_path, f"excludes: ['{gconv}/BIG5*.so']\n")
    out = tmp_path / "image"
    build(spec, out)
    files = image_files(out)
    assert f"{gconv}/EUC-JP.so" in files and f"{gconv}/BIG5.so" not in files


def test_pack_images_are_reproducible(iconv_image: Path, tmp_path: Path) -> None:
    again = tmp_path / "image"  # the same name (the output's stem) as iconv_image's, in index.json
    build(EXAMPLE, again)
    assert (again / "index.json").read_bytes() == (iconv_image / "index.json").read_bytes()


# --------------------------------------------------------------------------- ssl


def host_openssl_dirs() -> dict[str, str]:
    """OPENSSLDIR, ENGINESDIR, MODULESDIR as the host's ``openssl version -d -e -m`` prints them."""
    out = subprocess.run(["openssl", "version", "-d", "-e", "-m"], capture_output=True, text=True,
                         check=True).stdout
    return {line.split(":")[0]: line.split('"')[1] for line in out.splitlines() if '"' in line}


def first_root_cert() -> str:
    """The first certificate of the host's CA bundle (a self-signed root)."""
    text = Path("/etc/ssl/certs/ca-certificates.crt").read_text()
    end = "-----END CERTIFICATE-----"
    return text[text.index("-----BEGIN CERTIFICATE-----"):text.index(end) + len(end)] + "\n"


def openssl_spec(tmp_path: Path, extra: str = "") -> Path:
    spec = tmp_path / "openssl"
    (spec / "rootfs/read").mkdir(parents=True)
    (spec / "rootfs/read/root.pem").write_text(first_root_cert())
    (spec / "microimage.yaml").write_text("from: /\npaths: [/usr/bin/openssl]\n"
                                          "cmd: [openssl, verify, /read/root.pem]\n" + extra)
    return spec


def test_openssl_dirs_are_read_from_libcrypto() -> None:
    from microcontainer_tool.sources.sysroot import SysRoot

    libcrypto = next(p for p in ldd_paths("/usr/bin/openssl") if "libcrypto.so." in p)
    assert packs.openssl_dirs(SysRoot("/"), libcrypto) == host_openssl_dirs()


def ldd_paths(program: str) -> list[str]:
    out = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
    return [line.split("=>")[1].split()[0] for line in out.splitlines() if "=> /" in line]


@pytest.fixture(scope="module")
def openssl_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("openssl")
    build(openssl_spec(work), work / "image")
    return work / "image"


def test_ssl_pack_verifies_against_the_bundle_and_loads_providers(openssl_image: Path,
                                                                  tmp_path: Path) -> None:
    dirs = host_openssl_dirs()
    files = image_files(openssl_image)
    assert f"{dirs['OPENSSLDIR']}/openssl.cnf" in files  # the link, and its target:
    assert os.path.realpath(f"{dirs['OPENSSLDIR']}/openssl.cnf") in files
    assert "/etc/ssl/certs/ca-certificates.crt" in files
    assert {f"{dirs['MODULESDIR']}/{p.name}" for p in Path(dirs["MODULESDIR"]).iterdir()} <= set(files)
    assert {f"{dirs['ENGINESDIR']}/{p.name}" for p in Path(dirs["ENGINESDIR"]).iterdir()} <= set(files)
    proc = runc_run(openssl_image, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "/read/root.pem: OK\n"
    proc = runc_run(openssl_image, "latest", tmp_path,
                    args=["openssl", "list", "-providers", "-provider", "legacy", "-provider", "default"])
    assert proc.returncode == 0, proc.stderr
    assert "OpenSSL Legacy Provider" in proc.stdout and "OpenSSL Default Provider" in proc.stdout
    why = run_cli("why", str(openssl_image), f"{dirs['MODULESDIR']}/legacy.so").stdout.splitlines()[0]
    assert why.startswith(f"{dirs['MODULESDIR']}/legacy.so <- pack ssl (automatic: ")
    assert why.endswith("<- paths: /usr/bin/openssl") and "libcrypto.so.3 is in the closure" in why


def test_without_the_ssl_pack_verify_and_legacy_fail(tmp_path: Path) -> None:
    out = tmp_path / "image"
    build(openssl_spec(tmp_path, "auto_packs: false\n"), out)
    assert not any("ossl-modules" in p or p.endswith("openssl.cnf") for p in image_files(out))
    proc = runc_run(out, "latest", tmp_path)
    assert proc.returncode != 0 and "self-signed certificate" in proc.stderr, proc.stderr  # not trusted
    proc = runc_run(out, "latest", tmp_path, args=["openssl", "list", "-providers", "-provider", "legacy"])
    assert proc.returncode != 0 and "legacy" in proc.stderr, proc.stderr


@needs_shared_rpms
def test_ssl_pack_takes_the_rpm_layout(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", sorted(SHARED_RPMS.glob("*.rpm")))
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"packages: [curl]\npaths: [/usr/bin/curl]\n"
                                          f"repos: [{{baseurl: '{repo.as_uri()}', name: rocky}}]\n")
    out = tmp_path / "image"
    proc = run_cli("build", "-c", str(spec), "-o", str(out), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    files = image_files(out)
    for path in ("/etc/pki/tls/openssl.cnf", "/etc/pki/tls/openssl.d", "/usr/lib64/ossl-modules/legacy.so",
                 "/usr/lib64/ossl-modules/fips.so", "/usr/lib64/engines-3/padlock.so",
                 "/usr/lib64/gconv/gconv-modules"):  # libidn2 imports iconv_open
        assert path in files, path
    assert not any(p.startswith("/usr/lib/ssl") or "x86_64-linux-gnu" in p for p in files)
    # update-ca-trust never ran (no scriptlets): the bundle links are kept, dangling, and reported
    bundle = files["/etc/pki/tls/certs/ca-bundle.crt"]
    assert bundle["type"] == "symlink"
    assert bundle["link"] == "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"
    assert "/etc/pki/tls/certs/ca-bundle.crt: dangling symlink" in proc.stderr
    why = run_cli("why", str(out), "/etc/pki/tls/openssl.cnf").stdout.splitlines()
    assert why[0].startswith("/etc/pki/tls/openssl.cnf <- pack ssl (automatic: /usr/lib64/libcrypto.so.3")
    assert why[-1].startswith("package: openssl-libs-1:3.")


# --------------------------------------------------------------------------- nss


def test_glibc_version_from_file_names_and_banners(tmp_path: Path) -> None:
    from microcontainer_tool.sources.sysroot import SysRoot

    out = subprocess.run(["ldd", "--version"], capture_output=True, text=True, check=True).stdout
    major, minor = out.splitlines()[0].split()[-1].split(".")[:2]
    libc = str(host_libc())
    assert packs.glibc_version(SysRoot("/"), libc) == (int(major), int(minor))
    # banners as glibc 2.17 (CentOS 7) and 2.34 (RHEL 9) print them
    lib = tmp_path / "usr/lib64"
    lib.mkdir(parents=True)
    banners = ((b"GNU C Library (GNU libc) stable release version 2.17, by Roland McGrath", (2, 17)),
               (b"GNU C Library (GNU libc) stable release version 2.34.", (2, 34)))
    for banner, want in banners:
        (lib / "libc.so.6").write_bytes(b"\x7fELF\0\0junk\0" + banner + b"\n\0more")
        assert packs.glibc_version(SysRoot(str(tmp_path)), "/usr/lib64/libc.so.6") == want
    (lib / "libc-2.17.so").write_bytes(b"")  # glibc < 2.34 names its file so: the name wins
    (lib / "libc.so.6").unlink()
    (lib / "libc.so.6").symlink_to("libc-2.17.so")
    assert packs.glibc_version(SysRoot(str(tmp_path)), "/usr/lib64/libc.so.6") == (2, 17)
    # CentOS 7's RPM layout: /lib64 -> usr/lib64, and the closure names libc by its real file
    (tmp_path / "lib64").symlink_to("usr/lib64")
    for path in ("/lib64/libc.so.6", "/lib64/libc-2.17.so", "/usr/lib64/libc-2.17.so"):
        assert packs.glibc_version(SysRoot(str(tmp_path)), path) == (2, 17), path
    (lib / "libc-2.28.so").write_bytes(b"")  # a stale file beside it: the link's target answers
    (lib / "libc.so.6").unlink()
    (lib / "libc.so.6").symlink_to("libc-2.28.so")
    assert packs.glibc_version(SysRoot(str(tmp_path)), "/lib64/libc.so.6") == (2, 28)
    (lib / "libc-2.28.so").unlink()
    (lib / "libc.so.6").unlink()
    (lib / "libc-2.17.so").unlink()
    (lib / "libc.so.6").write_bytes(b"no banner")
    assert packs.glibc_version(SysRoot(str(tmp_path)), "/usr/lib64/libc.so.6") is None


@pytest.fixture(scope="module")
def nss_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sysroot with /usr/bin/id's closure and the host's libnss_files/libnss_dns beside libc."""
    root = tmp_path_factory.mktemp("nssroot")
    libdir = host_libc().parent
    # each library by its own name in its real directory (libc's), not through /lib -> usr/lib
    files = [os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
             for p in ldd_files("/usr/bin/id")]
    interpreter = next(p for p in ldd_files("/usr/bin/id") if "ld-linux" in p)
    modules = [str(libdir / "libnss_files.so.2"), str(libdir / "libnss_dns.so.2")]
    copy_closure(root, files + [interpreter] + modules)
    return root


@pytest.mark.parametrize("version_marker, extra, taken", [
    ("libc-2.17.so", "user: app\n", "automatic: nss files with glibc 2.17 < 2.34"),
    ("libc-2.17.so", "nss: true\n", "automatic: nss files with glibc 2.17 < 2.34"),
    ("libc-2.17.so", "", None),  # no nss files, no nss modules
    ("libc-2.17.so", "user: app\nauto_packs: false\n", None),
    (None, "user: app\n", None),  # this host's glibc (>= 2.34) has files and dns built in
    (None, "user: app\npacks: [nss]\n", "packs: nss"),  # explicit: taken whatever the version
])
def test_nss_pack_follows_the_glibc_version(nss_root: Path, tmp_path: Path, version_marker: str | None,
                                            extra: str, taken: str | None) -> None:
    root = tmp_path / "root"
    shutil.copytree(nss_root, root, symlinks=True)
    libdir = host_libc().parent
    if version_marker:  # what glibc < 2.34 ships beside libc.so.6
        (root / libdir.relative_to("/") / version_marker).write_bytes(b"")
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {root}\npaths: [/usr/bin/id]\ncmd: [/usr/bin/id]\n" + extra)
    out = tmp_path / "image"
    build(spec, out)
    files = image_files(out)
    modules = {f"{libdir}/libnss_files.so.2", f"{libdir}/libnss_dns.so.2"}
    if taken is None:
        assert not modules & set(files)
        return
    assert modules <= set(files)
    record = read_record(str(out))
    assert record["files"][f"{libdir}/libnss_dns.so.2"]["why"][0]["rule"] == taken


# --------------------------------------------------------------------------- tz and locale


def small_image(tmp_path: Path, text: str) -> Path:
    spec = tmp_path / "spec"
    spec.mkdir(exist_ok=True)
    (spec / "microimage.yaml").write_text(text)
    out = tmp_path / "image"
    build(spec, out)
    return out


@pytest.mark.parametrize("packs_line, hour", [("packs: [tz]\n", "09"), ("", "00")])
def test_tz_pack_gives_time_zones(tmp_path: Path, packs_line: str, hour: str) -> None:
    out = small_image(tmp_path, "from: /\npaths: [/usr/bin/date]\nenv: [TZ=Asia/Tokyo]\n"
                                "cmd: [date, -d, '@0', '+%H %Z']\n" + packs_line)
    files = image_files(out)
    assert ("/usr/share/zoneinfo/Asia/Tokyo" in files) == bool(packs_line)
    if packs_line:
        assert {"/usr/share/zoneinfo/Europe/Paris", "/etc/localtime"} <= set(files)
        assert len([p for p in files if p.startswith("/usr/share/zoneinfo/")]) > 300
    proc = runc_run(out, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (f"{hour} JST\n" if packs_line else f"{hour} Asia\n")


@pytest.mark.parametrize("packs_line, charmap", [("packs: [locale]\n", "UTF-8"), ("", "ANSI_X3.4-1968")])
def test_locale_pack_gives_c_utf8(tmp_path: Path, packs_line: str, charmap: str) -> None:
    out = small_image(tmp_path, "from: /\npaths: [/usr/bin/locale]\nenv: [LC_ALL=C.UTF-8]\n"
                                "cmd: [locale, charmap]\n" + packs_line)
    files = image_files(out)
    assert any(p.startswith("/usr/lib/locale/C.") for p in files) == bool(packs_line)
    proc = runc_run(out, "latest", tmp_path)
    assert proc.stdout == f"{charmap}\n", proc.stderr
    if packs_line:
        why = run_cli("why", str(out), "/usr/lib/locale/C.utf8/LC_CTYPE").stdout.splitlines()[0]
        assert why == "/usr/lib/locale/C.utf8/LC_CTYPE <- pack locale (packs: locale)"


def test_an_explicit_pack_that_finds_nothing_is_one_line(nss_root: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec"
    spec.mkdir()
    (spec / "microimage.yaml").write_text(f"from: {nss_root}\npaths: [/usr/bin/id]\npacks: [tz]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "out"))
    assert_one_line_error(proc, "microimage.yaml:3: pack 'tz': no /usr/share/zoneinfo in the sysroot")
