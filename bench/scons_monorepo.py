#!/usr/bin/env python3
"""SCons overhead of MicroImage in a monorepo, next to a plain-SCons baseline.

Generates, in a temporary directory, a monorepo of N apps (default 50): each a
tiny C program built by SCons, a config file (``/read/app.conf`` in the
image) and a spec ``from: /``; one image per app. The BASELINE project has the
same N programs and N trivial ``Command`` targets copying the config file, so
the ratio ours/baseline is what the image tool adds to a build of this size.

Prints a table (nothing is asserted): median and min/max wall time of

* cold build (no outputs, no .sconsign, no layer cache),
* no-op ``scons -q image`` and no-op ``scons image``,
* one config edit (one app.conf changed, then ``scons image``),

measured with ``time.perf_counter`` around the ``scons`` process, the two
projects alternating in each round. Targets (50 images): no-op under 1 s and
at most 1.5x the baseline; one edit under 1.5 s. ``--apps`` takes several
sizes (default ``50 500``); sizes over 100 run one cold round (a cold build of
500 images takes minutes) and report their no-op and one-edit times.

Usage: python bench/scons_monorepo.py [--apps 50 500] [--rounds 5] [--cold-rounds 3] [-j 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL_DIR = os.path.join(REPO, "microcontainer_tool", "site_tools")

MAIN_C = """\
#include <stdio.h>
#include <string.h>

int main(void)
{
    char line[256] = "unconfigured";
    FILE *conf = fopen("/read/app.conf", "r");
    if (conf != NULL) {
        if (fgets(line, sizeof line, conf) != NULL)
            line[strcspn(line, "\\n")] = '\\0';
        fclose(conf);
    }
    printf("app%(i)02d: %%s\\n", line);
    return 0;
}
"""

OURS = """\
env = Environment(tools=["default", "microimage"], toolpath=[%(tool)r])
images = []
for i in range(%(n)d):
    app = "apps/app%%02d" %% i
    prog = env.Program("build/bin/app%%02d" %% i, [app + "/main.c"])
    images += env.MicroImage("build/images/app%%02d" %% i, app + "/microimage.yaml",
                             BINARIES=[prog], FILES={"/read/app.conf": app + "/app.conf"})
Alias("image", images)
Default("image")
"""

BASELINE = """\
env = Environment(tools=["default"])
outs = []
for i in range(%(n)d):
    app = "apps/app%%02d" %% i
    outs += env.Program("build/bin/app%%02d" %% i, [app + "/main.c"])
    outs += env.Command("build/conf/app%%02d.conf" %% i, app + "/app.conf", Copy("$TARGET", "$SOURCE"))
Alias("image", outs)
Default("image")
"""


def generate(root: str, n: int, ours: bool) -> None:
    for i in range(n):
        app = os.path.join(root, "apps", f"app{i:02d}")
        os.makedirs(app)
        with open(os.path.join(app, "main.c"), "w") as handle:
            handle.write(MAIN_C % {"i": i})
        with open(os.path.join(app, "app.conf"), "w") as handle:
            handle.write(f"config of app {i}\n")
        if ours:
            with open(os.path.join(app, "microimage.yaml"), "w") as handle:
                handle.write(f"from: /\ncmd: [/usr/local/bin/app{i:02d}]\n"
                             f"labels: {{org.opencontainers.image.title: app{i:02d}}}\n")
    with open(os.path.join(root, "SConstruct"), "w") as handle:
        handle.write((OURS if ours else BASELINE) % {"n": n, "tool": TOOL_DIR})


def scons(root: str, *args: str) -> tuple[float, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("SCONSFLAGS", "MCT_SCONS_CACHEDIR")}
    env["PYTHONPATH"] = REPO + os.pathsep + os.environ.get("PYTHONPATH", "")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "SCons", *args], cwd=root, env=env,
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0, 1) or (proc.returncode == 1 and "-q" not in args):
        sys.exit(f"scons {' '.join(args)} failed in {root}:\n{proc.stdout}{proc.stderr}")
    return elapsed, proc.returncode


def clean(root: str) -> None:
    for name in ("build", ".mct-cache"):
        shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    for name in os.listdir(root):
        if name.startswith(".sconsign"):
            os.unlink(os.path.join(root, name))
    for dirpath, _, filenames in os.walk(os.path.join(root, "apps")):
        for name in filenames:
            if name.endswith(".o"):
                os.unlink(os.path.join(dirpath, name))


def edit_config(root: str, round_no: int) -> None:
    path = os.path.join(root, "apps", "app07", "app.conf")
    with open(path, "w") as handle:
        handle.write(f"config of app 7, edit {round_no}\n")


def main() -> None:
    from benchsetup import compile_package  # bench/ is sys.path[0] when run as a script

    compile_package()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, nargs="+", default=[50, 500], help="monorepo sizes")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the no-op and edit runs")
    parser.add_argument("--cold-rounds", type=int, default=3, help="cold builds (1 for sizes over 100)")
    parser.add_argument("-j", "--jobs", type=int, default=1, help="scons -j for every run")
    parser.add_argument("--keep", action="store_true", help="keep the generated projects")
    args = parser.parse_args()
    for apps in args.apps:
        measure(apps, args.rounds, args.cold_rounds if apps <= 100 else 1, args.jobs, args.keep)


def measure(apps: int, rounds: int, cold_rounds: int, jobs_count: int, keep: bool) -> None:
    """Generate both projects of ``apps`` images, time them alternating, print the table."""
    jobs = f"-j{jobs_count}"
    top = tempfile.mkdtemp(prefix="mct-bench-scons-")
    projects = {"ours": os.path.join(top, "ours"), "baseline": os.path.join(top, "baseline")}
    for name, root in projects.items():
        generate(root, apps, ours=(name == "ours"))
    times: dict[tuple[str, str], list[float]] = {}

    def record(name: str, what: str, elapsed: float) -> None:
        times.setdefault((what, name), []).append(elapsed)

    try:
        for _ in range(cold_rounds):
            for name, root in projects.items():
                clean(root)
                record(name, "cold build", scons(root, jobs, "image")[0])
        for _ in range(rounds):
            for name, root in projects.items():
                elapsed, rc = scons(root, jobs, "-q", "image")
                if rc != 0:
                    sys.exit(f"{name}: `scons -q image` after a build says out of date")
                record(name, "no-op scons -q image", elapsed)
                record(name, "no-op scons image", scons(root, jobs, "image")[0])
        for round_no in range(rounds):
            for name, root in projects.items():
                edit_config(root, round_no)
                record(name, "one config edit", scons(root, jobs, "image")[0])
    finally:
        if keep:
            print(f"projects kept in {top}")
        else:
            shutil.rmtree(top, ignore_errors=True)

    targets = {"no-op scons -q image": (1.0, 1.5), "no-op scons image": (1.0, 1.5),
               "one config edit": (1.5, None)} if apps <= 50 else {}
    print(f"SCons monorepo: {apps} images (ours) vs {apps} programs + {apps} "
          f"Command copies (baseline), scons {jobs}, Python {sys.version.split()[0]}")
    print(f"{'run':<22} {'ours median':>11} {'(min-max)':>13} {'baseline':>9} {'(min-max)':>13} "
          f"{'ratio':>6}  target")
    for what in ("cold build", "no-op scons -q image", "no-op scons image", "one config edit"):
        ours, base = times[(what, "ours")], times[(what, "baseline")]
        m_ours, m_base = statistics.median(ours), statistics.median(base)
        ratio = m_ours / m_base
        note = ""
        if what in targets:
            limit, max_ratio = targets[what]
            met = m_ours < limit and (max_ratio is None or ratio <= max_ratio)
            note = f"< {limit:g} s" + (f", <= {max_ratio:g}x" if max_ratio else "") + (
                ": ok" if met else ": MISSED")
        print(f"{what:<22} {m_ours:>10.3f}s {min(ours):>6.3f}-{max(ours):<6.3f} {m_base:>8.3f}s "
              f"{min(base):>6.3f}-{max(base):<6.3f} {ratio:>5.2f}x  {note}")


if __name__ == "__main__":
    main()
