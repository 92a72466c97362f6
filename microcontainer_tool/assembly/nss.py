"""Users, groups and the nss files (``/etc/passwd``, ``/etc/group``, ``/etc/nsswitch.conf``).

Follows smith: the user is ``USER[:GROUP]`` by name or id, defaulting to 10:10.
A named user or group, an explicit ``groups`` list, or ``nss: true`` makes the
image carry nss files listing a few standard entries plus the image's user
(home ``/write``) and groups, and an nsswitch.conf that looks up files only
(hosts: files dns).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ID = 10
DEFAULT_NAME = "smith"
_USERS = (("root", 0), ("daemon", 1), ("bin", 2), ("sys", 3))
_GROUPS = (("root", 0), ("daemon", 1), ("bin", 2), ("sys", 3), ("adm", 4), ("tty", 5))


@dataclass(frozen=True)
class Identity:
    """The resolved user of the image.

    Attributes:
        uid: numeric user id.
        gid: numeric primary group id.
        user: user name (for passwd).
        group: primary group name (for group).
        named: whether the spec named a user or group by name (needs nss files).
        group_given: whether the spec named a group (``USER:GROUP``).
    """

    uid: int
    gid: int
    user: str
    group: str
    named: bool
    group_given: bool = True

    @property
    def config_user(self) -> str:
        """The ``User`` of the image config.

        Numeric ``uid:gid`` unless the spec named the user or group: then the
        names, which the runtime resolves with the image's own passwd/group
        files, so supplementary ``groups`` apply too. A user named without a
        group is just ``USER`` (as smith writes it): the runtime takes the
        primary group from the image's ``/etc/passwd``.
        """
        if self.named:
            return f"{self.user}:{self.group}" if self.group_given else self.user
        return f"{self.uid}:{self.gid}"


def parse_user(spec_user: str) -> Identity:
    """Resolve ``USER[:GROUP]`` (names or ids) the way smith does.

    Args:
        spec_user: e.g. ``"10:10"``, ``"nobody"``, ``"app:app"``, ``"0:0"``.

    Returns:
        The identity; unknown names get id 10.
    """
    user, _, group = spec_user.partition(":")
    named = False
    uid = _lookup(_USERS, user)
    gid = _lookup(_GROUPS, group) if group else -1
    if user.isdigit():
        uid, user = int(user), _name(_USERS, int(user))
    elif user:
        named = True
    if group.isdigit():
        gid, group = int(group), _name(_GROUPS, int(group))
    elif group:
        named = True
    uid = DEFAULT_ID if uid < 0 else uid
    gid = DEFAULT_ID if gid < 0 else gid
    return Identity(uid, gid, user or DEFAULT_NAME, group or DEFAULT_NAME, named, bool(group))


def nss_files(identity: Identity, groups: tuple[str, ...]) -> dict[str, bytes]:
    """Return the nss files for an identity and extra groups.

    Args:
        identity: the image's user.
        groups: extra group names the user belongs to (ids follow the primary gid).

    Returns:
        ``{image path: content}`` for passwd, group and nsswitch.conf.
    """
    passwd = [f"{name}:x:{i}:{i}:{name}:/write:/sbin/nologin" for name, i in _USERS]
    if identity.uid not in {i for _, i in _USERS}:
        passwd.append(f"{identity.user}:x:{identity.uid}:{identity.gid}:{identity.user}:/write:/sbin/nologin")
    group_lines = [f"{name}:x:{i}:" for name, i in _GROUPS]
    known = {i for _, i in _GROUPS}
    if identity.gid not in known:
        group_lines.append(f"{identity.group}:x:{identity.gid}:")
        known.add(identity.gid)
    next_gid = identity.gid
    names = {name for name, _ in _GROUPS} | {identity.group}
    for name in groups:
        if name in names:
            continue
        next_gid += 1
        while next_gid in known:
            next_gid += 1
        known.add(next_gid)
        names.add(name)
        group_lines.append(f"{name}:x:{next_gid}:{identity.user}")
    nsswitch = ["passwd:     files", "shadow:     files", "group:      files", "hosts:      files dns"]
    return {
        "/etc/passwd": _text(passwd),
        "/etc/group": _text(group_lines),
        "/etc/nsswitch.conf": _text(nsswitch),
    }


def _text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def _lookup(table: tuple[tuple[str, int], ...], name: str) -> int:
    return next((i for n, i in table if n == name), -1)


def _name(table: tuple[tuple[str, int], ...], ident: int) -> str:
    return next((n for n, i in table if i == ident), "")
