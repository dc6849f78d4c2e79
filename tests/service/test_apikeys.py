"""API keys: created by the CLI, printed once, stored only as a hash, revocable."""

from __future__ import annotations

from emoslm.cli import main
from emoslm.service.store import Store, hash_key


def test_apikey_cli_create_list_revoke(tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["apikey", "create", "app-1", "--data-dir", str(data)]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("esk-") and len(key) > 40
    store = Store(data)
    assert store.check_api_key(key) == "app-1" and store.check_api_key(key + "x") is None
    raw = b"".join(p.read_bytes() for p in data.glob("emoslm.sqlite3*"))
    assert key.encode() not in raw and hash_key(key).encode() in raw  # only the sha256 is stored
    assert main(["apikey", "create", "app-1", "--data-dir", str(data)]) == 2  # names are unique
    assert "exists already" in capsys.readouterr().err
    assert main(["apikey", "list", "--data-dir", str(data)]) == 0
    assert capsys.readouterr().out.startswith("app-1\t")
    assert main(["apikey", "revoke", "app-1", "--data-dir", str(data)]) == 0
    assert store.check_api_key(key) is None
    assert main(["apikey", "revoke", "--data-dir", str(data)]) == 2  # a name is needed
