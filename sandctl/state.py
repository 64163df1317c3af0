"""Which cluster a sandctl command talks to, and the little state `cluster start` remembers.

Config: --config, else $SANDSTORE_CONFIG, else the config remembered by `cluster start`,
else configs/local-3.toml. Data dir: --data-dir, else the one remembered with that same
config, else node.config.default_data_dir(config). The state file is
~/.sandstore/cluster.json: {"config": absolute path, "data_dir": absolute path}.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from node.config import DEFAULT_CONFIG_PATH, default_data_dir
from node.errors import ConfigError

CONFIG_ENVIRONMENT_VARIABLE = "SANDSTORE_CONFIG"


def state_path() -> Path:
    return Path.home() / ".sandstore" / "cluster.json"


def load_state() -> dict:
    """The remembered state, or {} if nothing was remembered."""
    path = state_path()
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read {path} ({error}); delete it and run sandctl cluster start again") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path} is not a JSON object; delete it and run sandctl cluster start again")
    return document


def remember(config_path: str | os.PathLike, data_dir: str | os.PathLike) -> None:
    """Record the cluster that later commands use by default (atomic: temp file + rename)."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"config": str(Path(config_path).resolve()), "data_dir": str(Path(data_dir).resolve())}
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".cluster.", suffix=".tmp", delete=False) as file:
        json.dump(document, file, indent=2)
        file.write("\n")
    os.replace(file.name, path)


def resolve_config_path(option: str | None) -> Path:
    if option:
        return Path(option)
    explicit = os.environ.get(CONFIG_ENVIRONMENT_VARIABLE)
    if explicit:
        return Path(explicit)
    remembered = load_state().get("config")
    if isinstance(remembered, str) and remembered:
        return Path(remembered)
    return DEFAULT_CONFIG_PATH


def resolve_data_dir(option: str | None, config_path: Path) -> Path:
    if option:
        return Path(option)
    state = load_state()
    remembered_config = state.get("config")
    remembered_data_dir = state.get("data_dir")
    # The remembered data dir belongs to the remembered config only: another config's
    # nodes must never open (or be stopped through) that cluster's files.
    if isinstance(remembered_data_dir, str) and isinstance(remembered_config, str):
        if Path(remembered_config).resolve() == config_path.resolve():
            return Path(remembered_data_dir)
    return default_data_dir(config_path)
