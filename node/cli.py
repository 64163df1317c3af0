"""`sandstore node`: run one SandStore node in the foreground.

Logs go to stderr (or --log-file); SIGTERM stops it gracefully, so any supervisor can own it.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from node.config import DEFAULT_CONFIG_PATH, default_data_dir, load_config
from node.errors import SandStoreError

EXIT_REFUSED = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """SandStore node daemon. Most users want `sandctl cluster start` instead."""


@main.command("node")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=str(DEFAULT_CONFIG_PATH),
              show_default=True, help="Cluster config (TOML).")
@click.option("--id", "node_id", required=True, help="This node's id in the config, e.g. n1.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="Cluster data directory; this node uses DATA_DIR/ID. "
                   "Default: $SANDSTORE_DATA_DIR or ~/.sandstore/data/<config name>.")
@click.option("--log-file", type=click.Path(dir_okay=False), default=None, help="Append logs here instead of stderr.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning"]), default="info", show_default=True)
@click.option("--join", is_flag=True, help="Join an existing cluster (added with add-voter) instead of bootstrapping.")
def node_command(config_path: str, node_id: str, data_dir: str | None, log_file: str | None, log_level: str,
                 join: bool) -> None:
    """Run one node in the foreground until SIGTERM.

    Example: sandstore node --config configs/local-3.toml --id n1
    """
    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, log_level.upper()), handlers=[handler])
    try:
        config = load_config(config_path)
        config.node(node_id)
        from node.server import NodeServer

        server = NodeServer(config, node_id, data_dir or default_data_dir(config_path), join=join)
    except SandStoreError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(EXIT_REFUSED)
    except OSError as error:
        # Typically a port already in use or an unwritable data directory.
        click.echo(f"Error: cannot start node {node_id}: {error}", err=True)
        sys.exit(EXIT_REFUSED)
    except Exception as error:  # zmq.ZMQError (address in use) and lmdb.Error are not OSErrors
        if os.environ.get("SANDSTORE_TRACEBACK"):
            raise
        # The stack goes to the log (an assertion has no message of its own to show); the
        # one line names the error's type when its text is empty.
        logging.getLogger("sandstore.node").error("cannot start node %s", node_id, exc_info=True)
        click.echo(f"Error: cannot start node {node_id}: {str(error) or type(error).__name__}", err=True)
        sys.exit(EXIT_REFUSED)
    server.serve_forever()


if __name__ == "__main__":
    main()
