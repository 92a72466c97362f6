"""smith-compatible user parsing and nss files."""

from microcontainer_tool.assembly.nss import nss_files, parse_user


def test_parse_user():
    assert parse_user("10:10").config_user == "10:10"
    assert not parse_user("10:10").named
    assert parse_user("0:0").user == "root"
    ident = parse_user("app")
    assert (ident.uid, ident.gid, ident.user, ident.named) == (10, 10, "app", True)
    daemon = parse_user("daemon:tty")
    assert (daemon.uid, daemon.gid, daemon.config_user) == (1, 5, "daemon:tty")


def test_nss_files():
    files = nss_files(parse_user("app:app"), ("audio", "tty"))
    passwd = files["/etc/passwd"].decode()
    group = files["/etc/group"].decode()
    assert "app:x:10:10:app:/write:/sbin/nologin\n" in passwd
    assert "app:x:10:\n" in group and "audio:x:11:app\n" in group
    assert group.count("tty:") == 1
    assert b"hosts:      files dns" in files["/etc/nsswitch.conf"]
