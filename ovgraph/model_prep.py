"""Model preparation commands run before (or instead of) serving: pull, config management.

``handle_model_commands(args)`` returns an exit code when the flags asked for a command that
ends the process (``--pull``, ``--list_models``, ``--add_to_config``, ``--remove_from_config``),
or None to go on serving.
"""

from __future__ import annotations

import argparse

__all__ = ["handle_model_commands"]


def handle_model_commands(args: argparse.Namespace) -> int | None:
    """Run the model-preparation command the flags name, if any."""
    return None
