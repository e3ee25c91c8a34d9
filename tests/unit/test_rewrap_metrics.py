"""Pure parts of the rewrap planner and the metrics config."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kmip_bridge.admin.rewrap import retired_labels
from kmip_bridge.config import ConfigError, load
from kmip_bridge.keyhsm import KekInfo


def test_retired_labels_are_every_version_but_the_newest_of_the_named_keks() -> None:
    keks = [
        KekInfo("default-v1", "default", 1, "aes-kwp"),
        KekInfo("default-v3", "default", 3, "aes-kwp"),
        KekInfo("default-v2", "default", 2, "aes-kwp"),
        KekInfo("acme-v1", "acme", 1, "rsa-oaep"),
        KekInfo("other-v1", "other", 1, "aes-kwp"),
        KekInfo("other-v2", "other", 2, "aes-kwp"),
    ]
    assert retired_labels(keks, ["default", "acme"]) == ["default-v1", "default-v2"]
    assert retired_labels(keks, []) == []


def _config(tmp_path: Path, metrics: object) -> Path:
    cfg = {"server": {}, "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
           "keyhsm": {"pin_file": "pin"}, "database": {"url": "sqlite:///x.db"}}
    if metrics is not None:
        cfg["metrics"] = metrics
    path = tmp_path / "server.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_metrics_are_off_and_on_loopback_by_default(tmp_path: Path) -> None:
    m = load(_config(tmp_path, None)).metrics
    assert (m.enabled, m.host, m.port) == (False, "127.0.0.1", 9696)
    assert load(_config(tmp_path, {"enabled": True, "port": 9100})).metrics.port == 9100


@pytest.mark.parametrize(("metrics", "message"), [
    ({"port": 0}, "metrics.port"),
    ({"enabled": "yes"}, "metrics.enabled"),
    ({"path": "/m"}, "metrics.path: unknown key"),
])
def test_metrics_config_errors_name_the_key(tmp_path: Path, metrics: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(_config(tmp_path, metrics))
