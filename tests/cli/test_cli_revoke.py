"""`jq keys revoke` (issue 15, finding 9): the key's id goes into the URL, never a secret; given
a full key, the CLI turns it into its key_id before anything is sent."""

from __future__ import annotations

from sdk.jq_server_process import ServerProcess

from tests.cli.test_cli_jobs import jq, jq_json


def test_revoke_by_a_full_key_sends_only_its_id(jq_server: ServerProcess) -> None:
    admin = jq_server.admin_key
    created = jq_json(jq_server, admin, "keys", "create", "--name", "leaked", "--owner",
                      "cli-revoke", "--type", "client")  # fmt: skip
    revoked = jq_json(jq_server, admin, "keys", "revoke", created["key"])
    assert revoked["key"] == created["key_id"] and revoked["revoked_at"]
    jq(jq_server, created["key"], "stats", code=3)
    text = jq(jq_server, admin, "keys", "revoke", created["key_id"])
    assert created["key_id"] in text and created["key"] not in text
    assert created["key"] not in jq_server.log_path.read_text()
