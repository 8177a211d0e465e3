"""Error fingerprints: the same error about other ids, numbers, paths, addresses and quoted
values falls in one group; another exception type, or another message, does not."""

from __future__ import annotations

import pytest

from jq_tool.core.fingerprint import MAX_PATTERN, fingerprint


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ValueError: user 1234 not found", "ValueError: user 98 not found"),
        ("ValueError: amount -3.5 too low", "ValueError: amount 1e6 too low"),
        (
            "KeyError: job 3f2a9c1e-1111-2222-3333-444455556666 missing",
            "KeyError: job 00000000-aaaa-bbbb-cccc-ddddeeeeffff missing",
        ),
        ("IOError: sha 9f86d081884c7d659a2f is bad", "IOError: sha 0a1b2c3d4e5f60718293 is bad"),
        (
            "FileNotFoundError: [Errno 2] No such file: '/data/in/1.csv'",
            "FileNotFoundError: [Errno 2] No such file: '/data/in/2024/xyz.csv'",
        ),
        ("OSError: cannot open /var/tmp/a/b.txt", "OSError: cannot open /home/u/c.txt"),
        ("OSError: cannot open C:\\temp\\a.txt", "OSError: cannot open D:\\x\\y.txt"),
        ("RuntimeError: object at 0x7f00aa12", "RuntimeError: object at 0x55d1"),
        (
            "ConnectionError: refused by 10.0.0.1:8080",
            "ConnectionError: refused by 192.168.1.20:443",
        ),
        ("HTTPError: GET https://a.example/x?id=1 gave 503", "HTTPError: GET http://b/y gave 502"),
        ('ValueError: bad name "alice"', "ValueError: bad name 'bob'"),
        ("requests.exceptions.Timeout: 30 s", "requests.exceptions.Timeout: 5 s"),
        ("ValueError: user 1 not found\nmore detail 1", "ValueError: user 2 not found\nother"),
        (
            'Traceback (most recent call last):\n  File "w.py", line 3, in run\n'
            "ZeroDivisionError: division by zero",
            'Traceback (most recent call last):\n  File "/other/v.py", line 99, in go\n'
            "ZeroDivisionError: division by zero",
        ),
        ("  ValueError:   spaced   1  ", "ValueError: spaced 2"),
    ],
)
def test_the_same_error_with_other_values_falls_in_one_group(one: str, other: str) -> None:
    assert fingerprint(one) == fingerprint(other)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("ValueError: user 1 not found", "KeyError: user 1 not found"),
        ("ValueError: user 1 not found", "ValueError: order 1 not found"),
        ("TimeoutError", "ConnectionError"),
        ("lease expired", "ValueError: lease expired"),
        ("mypkg.errors.Bad: x", "otherpkg.errors.Bad: x"),
    ],
)
def test_other_types_or_messages_fall_in_other_groups(one: str, other: str) -> None:
    assert fingerprint(one).id != fingerprint(other).id


def test_the_type_and_pattern_are_named() -> None:
    found = fingerprint("ValueError: user 1234 not found in '/tmp/x'")
    assert (found.error_type, found.pattern) == ("ValueError", "user <n> not found in <str>")
    assert fingerprint("TimeoutError").error_type == "TimeoutError"
    assert fingerprint("lease expired").error_type == ""
    assert fingerprint("http://host/path failed").error_type == ""  # a URL is not a type
    assert len(fingerprint("E: " + "word " * 500).pattern) == MAX_PATTERN


def test_a_fingerprint_is_stable_text() -> None:
    # Groups are rebuilt from the log on every start: the id must never depend on the process
    # (no hash seed). This value is a contract with the dead jobs of existing data dirs.
    found = fingerprint("ValueError: user 1234 not found")
    assert found.id == fingerprint("ValueError: user 7 not found").id
    assert found.id == "94782ad052665185"
    assert fingerprint("").pattern == ""
