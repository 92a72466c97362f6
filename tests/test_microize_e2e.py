"""Microize: `from:` an existing (fat) image, with the README's inheritance rules."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import assert_one_line_error, run_cli, runc_run


def spec_dir(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "microimage.yaml").write_text(text)
    return path


def config_of(image: Path) -> dict:
    proc = run_cli("inspect", "--json", str(image))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def content_of(image: Path) -> dict:
    """Path -> (type, mode, size, link, sha256) of an image's files, /var/lib left out."""
    import hashlib
    import subprocess

    unpacked = image.parent / (image.name + ".unpacked")
    subprocess.run(["umoci", "unpack", "--rootless", "--image", f"{image_dir(image)}:latest", str(unpacked)],
                   check=True, capture_output=True)
    out = {}
    root = unpacked / "rootfs"
    for path in sorted(root.rglob("*")):
        rel = "/" + str(path.relative_to(root))
        if rel.startswith("/var"):
            continue
        st = path.lstat()
        data = path.read_bytes() if path.is_file() and not path.is_symlink() else b""
        out[rel] = (st.st_mode, st.st_size if data else 0, str(path.readlink()) if path.is_symlink() else "",
                    hashlib.sha256(data).hexdigest())
    return out


def image_dir(image: Path) -> Path:
    """An OCI layout of ``image`` (an oci-archive is unpacked with tar)."""
    import subprocess

    if image.is_dir():
        return image
    layout = image.parent / (image.name + ".layout")
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(image), "-C", str(layout)], check=True)
    return layout


def test_microize_from_a_fat_image(tmp_path):
    fat_spec = spec_dir(tmp_path / "fat", """
paths: [/usr/bin/cat, /usr/bin/ls, /usr/bin/true, /usr/bin/id, /usr/share/common-licenses]
env: [PATH=/opt/tools:/usr/bin, LD_LIBRARY_PATH=/opt/lib, LANG=C.UTF-8]
dir: /write
cmd: [/usr/bin/ls, -l]
""")
    fat = tmp_path / "fat-image"
    assert run_cli("build", "-c", str(fat_spec), "-o", str(fat), "--tag", "v1").returncode == 0
    micro_spec = spec_dir(tmp_path / "micro", f"""
from: {fat}:v1
paths: [/usr/bin/true]
entrypoint: [true]
""")
    micro = tmp_path / "micro-image"
    proc = run_cli("build", "-c", str(micro_spec), "-o", str(micro), "--cache-dir", str(tmp_path / "cache"))
    assert proc.returncode == 0, proc.stderr
    info = config_of(micro)
    conf = info["config"]["config"]
    paths = {f["path"] for f in info["files"]}
    assert "/usr/bin/true" in paths and "/usr/bin/cat" not in paths
    assert not any(p.startswith("/usr/share/common-licenses") for p in paths)
    assert "PATH=/opt/tools:/usr/bin" in conf["Env"] and "LD_LIBRARY_PATH=/opt/lib" in conf["Env"]
    assert not any(e.startswith("LANG=") for e in conf["Env"])  # only PATH and LD_LIBRARY_PATH
    assert conf["WorkingDir"] == "/write"
    assert "Cmd" not in conf  # an empty cmd stays empty: never the source's ls -l
    assert conf["Entrypoint"] == ["true"]
    assert len(info["manifest"]["layers"]) == 1
    proc = runc_run(micro, "latest", tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_microize_the_same_as_from_root(tmp_path):
    fat = tmp_path / "fat.tar"
    fat_spec = spec_dir(tmp_path / "fat", "paths: [/usr/bin/cat, /usr/bin/ls]\n")
    assert run_cli("build", "-c", str(fat_spec), "-o", str(fat)).returncode == 0
    from_image = spec_dir(tmp_path / "a", f"from: {fat}\npaths: [/usr/bin/cat]\ncmd: [/usr/bin/cat]\n")
    from_root = spec_dir(tmp_path / "b", "paths: [/usr/bin/cat]\ncmd: [/usr/bin/cat]\n")
    one = run_cli("build", "-c", str(from_image), "-o", str(tmp_path / "one.tar"), "-q",
                  "--cache-dir", str(tmp_path / "cache"))
    two = run_cli("build", "-c", str(from_root), "-o", str(tmp_path / "two.tar"), "-q")
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    # the same files (only the provenance record, and the host's dpkg facts, differ)
    assert content_of(tmp_path / "one.tar") == content_of(tmp_path / "two.tar")


def test_microize_missing_path_is_one_line(tmp_path):
    fat = tmp_path / "fat.tar"
    assert run_cli("build", "-c", str(spec_dir(tmp_path / "fat", "paths: [/usr/bin/cat]\n")),
                   "-o", str(fat)).returncode == 0
    spec = spec_dir(tmp_path / "m", f"from: {fat}\npaths: [/usr/bin/ls]\n")
    proc = run_cli("build", "-c", str(spec), "-o", str(tmp_path / "o"), "--cache-dir", str(tmp_path / "c"))
    assert_one_line_error(proc, "/usr/bin/ls", "matches nothing")
