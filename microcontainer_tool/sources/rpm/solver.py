"""Dependency resolution of RPM packages with libsolv.

:func:`resolve` puts the loaded repositories (:mod:`.repo`) and local RPM
files (their :class:`PackageInfo`, from :func:`.rpm.read_rpm`) into one libsolv
pool, turns the requests into install jobs and asks the solver for the
closure. The installed system is empty: the result is every package of a
fresh install.

Semantics (dnf's where it has one):

* A request is a package name (``curl``, globs allowed), a capability
  (``libssl.so.3()(64bit)``), a file (``/usr/bin/curl``), a version constraint
  (``curl >= 7.70``, ``glibc = 2.34-231.el9_7.2``) or a NEVRA
  (``curl-7.76.1-34.el9.x86_64``). Each one is installed in its **best**
  version (``SOLVER_FORCEBEST``): no silent fallback to an older one.
* Repository priorities: a lower dnf priority is preferred; local packages
  are preferred over every repository (they win over a repository copy of
  the same NEVRA) and are always installed.
* Weak dependencies (Recommends/Supplements) only with ``install_weak_deps``.
* ``exclude`` names (``fnmatch`` globs) repository packages resolution must
  not pick.
* File dependencies outside primary's file list make the resolver load the
  repositories' ``filelists`` (cached as ``.solv``) and build the pool again.

libsolv pitfalls handled here: the ``Pool`` stays referenced until every
solvable has become a :class:`PackageInfo` (solvables hold a raw pointer);
``addfileprovides`` before ``createwhatprovides``, and both before any
``select``; libsolv's priority is the opposite of dnf's.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

import solv

from microcontainer_tool.errors import ResolveError
from microcontainer_tool.sources.rpm.package import Dep, PackageInfo
from microcontainer_tool.sources.rpm.repo import Repo, new_pool

LOCAL_REPO = "@local"
"""Repository id of local RPM files in a :class:`Resolution`."""

SELECT_FLAGS = (solv.Selection.SELECTION_NAME | solv.Selection.SELECTION_PROVIDES
                | solv.Selection.SELECTION_FILELIST | solv.Selection.SELECTION_REL
                | solv.Selection.SELECTION_CANON | solv.Selection.SELECTION_DOTARCH
                | solv.Selection.SELECTION_GLOB)
"""How a request string is matched: name, capability, file, ``name op evr``, NEVRA, ``name.arch``."""

_REL = {"EQ": solv.REL_EQ, "LT": solv.REL_LT, "GT": solv.REL_GT,
        "LE": solv.REL_LT | solv.REL_EQ, "GE": solv.REL_GT | solv.REL_EQ}
_DEP_KEYS = (("provides", solv.SOLVABLE_PROVIDES), ("conflicts", solv.SOLVABLE_CONFLICTS),
             ("obsoletes", solv.SOLVABLE_OBSOLETES), ("recommends", solv.SOLVABLE_RECOMMENDS),
             ("suggests", solv.SOLVABLE_SUGGESTS), ("supplements", solv.SOLVABLE_SUPPLEMENTS),
             ("enhances", solv.SOLVABLE_ENHANCES))


@dataclass
class Resolution:
    """The result of :func:`resolve`.

    Attributes:
        packages: the packages to install, sorted by name, then arch; each
            with ``repo`` set and ``location`` the full URL (repository
            packages) or the local path (``repo == "@local"``). ``files`` of
            a repository package is what the loaded metadata lists: primary's
            subset (``/etc/*``, ``*/bin/*``) unless ``filelists_loaded``.
        filelists_loaded: whether the repositories' filelists were needed.
    """

    packages: list[PackageInfo] = field(default_factory=list)
    filelists_loaded: bool = False

    def names(self) -> list[str]:
        """The package names, in order."""
        return [p.name for p in self.packages]


def _dep_id(pool: solv.Pool, dep: Dep) -> int:
    """The libsolv id of a :class:`Dep` (rich dependencies parsed)."""
    if dep.name.startswith("("):
        rich = pool.parserpmrichdep(dep.name)
        if rich is None:
            raise ResolveError(f"cannot parse rich dependency {dep.name!r}")
        return rich.id
    name = pool.str2id(dep.name)
    if not dep.flags:
        return name
    return pool.rel2id(name, pool.str2id(dep.evr()), _REL[dep.flags])


def _add_packages(pool: solv.Pool, srepo: solv.Repo,
                  infos: Sequence[PackageInfo]) -> list[solv.XSolvable]:
    """Add packages to ``srepo`` as solvables: NEVRA, vendor, every dependency, files."""
    data = srepo.add_repodata(0)
    added = []
    for info in infos:
        s = srepo.add_solvable()
        s.name = info.name
        s.evr = info.evr
        s.arch = info.arch
        if info.vendor:
            s.vendor = info.vendor
        s.add_deparray(solv.SOLVABLE_PROVIDES, pool.rel2id(s.nameid, s.evrid, solv.REL_EQ))
        for attr, key in _DEP_KEYS:
            for dep in getattr(info, attr):
                s.add_deparray(key, _dep_id(pool, dep))
        for dep in info.requires:
            if not dep.name.startswith("rpmlib("):
                # marker 1: after the prereq marker (Requires(pre)); -1: before it
                s.add_deparray(solv.SOLVABLE_REQUIRES, _dep_id(pool, dep), 1 if dep.pre else -1)
        for path in info.files:
            directory, _, base = path.rstrip("/").rpartition("/")
            data.add_dirstr(s.id, solv.SOLVABLE_FILELIST, data.str2dir(directory or "/"), base)
        added.append(s)
    data.internalize()
    srepo.internalize()
    return added


class _Pool:
    """A libsolv pool with the repositories, local packages and excludes loaded."""

    def __init__(self, repos: Sequence[Repo], local: Sequence[PackageInfo], arch: str,
                 exclude: Sequence[str], filelists: bool) -> None:
        self.pool = new_pool(arch)
        self.pool.installed = self.pool.add_repo("@System")  # empty: a fresh install
        self.repos: dict[int, Repo] = {}
        for repo in repos:
            srepo = repo.add_to_pool(self.pool, filelists=filelists)
            self.repos[srepo.id] = repo
        top = max([r.config.solv_priority for r in repos], default=0)
        self.local: dict[int, PackageInfo] = {}
        self.local_solvables: list[solv.XSolvable] = []
        if local:
            self._add_local(local, top + 1)
        if exclude:
            self._exclude(exclude)
        self.file_deps: list[int] = self.pool.addfileprovides_queue()
        self.pool.createwhatprovides()

    def _add_local(self, local: Sequence[PackageInfo], priority: int) -> None:
        srepo = self.pool.add_repo(LOCAL_REPO)
        srepo.priority = priority
        for s, info in zip(_add_packages(self.pool, srepo, local), local, strict=True):
            self.local[s.id] = info
            self.local_solvables.append(s)

    def _exclude(self, patterns: Sequence[str]) -> None:
        ids = [s.id for srepo_id in self.repos for s in self.pool.id2repo(srepo_id).solvables
               if any(fnmatch.fnmatchcase(s.name, pat) for pat in patterns)]
        if ids:
            self.pool.set_disabled_list(ids)

    def missing_files(self, requests: Iterable[str]) -> list[str]:
        """File requests and file dependencies nothing provides (with what is loaded)."""
        missing = [self.pool.id2str(dep) for dep in self.file_deps
                   if not self.pool.whatprovides(dep)]
        missing += [req for req in requests
                    if req.startswith("/") and self.pool.select(req, SELECT_FLAGS).isempty()]
        return missing

    def solve(self, requests: Sequence[str], install_weak_deps: bool) -> list[solv.XSolvable]:
        pool = self.pool
        problems: list[str] = []
        jobs: list[solv.Job] = []
        for req in requests:
            sel = pool.select(req, SELECT_FLAGS) if req else None
            if sel is None or sel.isempty():
                hidden = req and not pool.select(
                    req, SELECT_FLAGS | solv.Selection.SELECTION_WITH_DISABLED).isempty()
                problems.append(f"requested {req} is excluded" if hidden
                                else f"nothing provides requested {req or repr(req)}")
                continue
            jobs += sel.jobs(solv.Job.SOLVER_INSTALL | solv.Job.SOLVER_FORCEBEST)
        for s in self.local_solvables:
            jobs += s.Selection().jobs(solv.Job.SOLVER_INSTALL)
        solver = pool.Solver()
        solver.set_flag(solv.Solver.SOLVER_FLAG_IGNORE_RECOMMENDED, int(not install_weak_deps))
        solver.set_flag(solv.Solver.SOLVER_FLAG_YUM_OBSOLETES, 1)
        solver.set_flag(solv.Solver.SOLVER_FLAG_BEST_OBEY_POLICY, 1)
        for problem in solver.solve(jobs):
            rules = problem.findallproblemrules() or [problem.findproblemrule()]
            for rule in rules:
                text = " ".join(rule.info().problemstr().split())
                if text and text not in problems:
                    problems.append(text)
            if not rules:
                problems.append(str(problem))
        if problems:
            raise ResolveError("cannot resolve: " + "; ".join(problems))
        return list(solver.transaction().newsolvables())

    def info(self, s: solv.XSolvable) -> PackageInfo:
        local = self.local.get(s.id)
        if local is not None:
            return local if local.repo == LOCAL_REPO else replace(local, repo=LOCAL_REPO)
        repo = self.repos[s.repo.id]
        info = repo.package_info(s)
        return replace(info, location=repo.url_of(info))


def resolve(repos: list[Repo], requests: list[str], *, local: Sequence[PackageInfo] = (),
            arch: str = "x86_64", exclude: Sequence[str] = (),
            install_weak_deps: bool = False) -> Resolution:
    """Resolve requests to the complete set of packages a fresh install needs.

    Args:
        repos: loaded repositories (:func:`.repo.load_repo`).
        requests: names, capabilities, file paths, ``name op evr`` constraints or NEVRAs.
        local: local RPM files (:func:`.rpm.read_rpm`): always installed, and
            preferred over any repository package (``location`` stays their path).
        arch: the target architecture (``x86_64``, ``aarch64``, ...).
        exclude: package names (globs) of repository packages not to pick.
        install_weak_deps: also install Recommends (and Supplements) where possible.

    Returns:
        The :class:`Resolution`.

    Raises:
        ResolveError: one line listing every problem (unknown request, missing
            dependency, conflict, obsoletes, ...).
        RepoError: filelists were needed and could not be loaded.
    """
    # job order can steer libsolv's choices: make it independent of the caller's order
    requests = sorted({" ".join(r.split()) for r in requests})
    if not requests and not local:
        raise ResolveError("cannot resolve: nothing requested")
    state = _Pool(repos, local, arch, exclude, filelists=False)
    filelists = False
    if repos and state.missing_files(requests):
        # primary lists only /etc/* and */bin/* files: try again with every file
        del state
        state = _Pool(repos, local, arch, exclude, filelists=True)
        filelists = True
    solvables = state.solve(requests, install_weak_deps)
    packages = sorted((state.info(s) for s in solvables),
                      key=lambda p: (p.name, p.arch, p.epoch, p.version, p.release))
    return Resolution(packages, filelists)


def check_closure(packages: Sequence[PackageInfo], arch: str = "x86_64") -> list[str]:
    """Problems of a package set taken as an installed system (empty list: consistent).

    Every requirement must be provided inside the set, and there must be no
    conflicts (libsolv ``SOLVER_VERIFY``). File dependencies are checked
    against ``files`` as given (repository packages carry only primary's file
    list unless filelists were loaded).
    """
    pool = new_pool(arch)
    srepo = pool.add_repo("@System")
    _add_packages(pool, srepo, packages)
    pool.installed = srepo
    pool.addfileprovides()
    pool.createwhatprovides()
    solver = pool.Solver()
    job = pool.Job(solv.Job.SOLVER_SOLVABLE_ALL | solv.Job.SOLVER_VERIFY, 0)
    problems: list[str] = []
    for problem in solver.solve([job]):
        for rule in problem.findallproblemrules():
            text = " ".join(rule.info().problemstr().split())
            if text not in problems:
                problems.append(text)
    return problems
