"""The vendored htmx files are exactly the ones the vendor README pins (version and sha256)."""

from __future__ import annotations

import hashlib
import re
from importlib import resources

VENDOR = resources.files("jq_tool.server").joinpath("static", "vendor")


def _pinned() -> dict[str, tuple[str, str]]:
    """file -> (version, sha256) from the README table."""
    rows: dict[str, tuple[str, str]] = {}
    for line in VENDOR.joinpath("README.md").read_text().splitlines():
        match = re.match(r"\| `([^`]+)` \| `[^`]+` \| (\S+) \|.*\| `([0-9a-f]{64})` \|$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


def test_every_vendored_file_is_pinned_with_its_checksum() -> None:
    pinned = _pinned()
    on_disk = {entry.name for entry in VENDOR.iterdir() if entry.name != "README.md"}
    assert on_disk == set(pinned), "vendor/ and its README table disagree"
    for name, (_, sha256) in pinned.items():
        actual = hashlib.sha256(VENDOR.joinpath(name).read_bytes()).hexdigest()
        assert actual == sha256, f"{name}: sha256 {actual} is not the pinned {sha256}"


def test_versions_are_the_htmx_2_line() -> None:
    pinned = _pinned()
    assert pinned["htmx.min.js"][0].startswith("2.0.")
    assert pinned["sse.min.js"][0].startswith("2.2.")
    htmx = VENDOR.joinpath("htmx.min.js").read_text()
    assert f'version:"{pinned["htmx.min.js"][0]}"' in htmx
    # The 2.x sse extension registers itself through htmx.defineExtension("sse", …).
    assert 'defineExtension("sse"' in VENDOR.joinpath("sse.min.js").read_text().replace("'", '"')


def test_licenses_are_0bsd() -> None:
    for name in ("htmx.LICENSE", "sse.LICENSE"):
        text = VENDOR.joinpath(name).read_text()
        assert "Zero" in text and "BSD" in text
