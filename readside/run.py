"""The ``readside`` console script. SIGTERM is a clean stop from the first instant, while the
command is still importing (``readside.cli`` takes about 0.2 s to import, much longer on a busy
machine): a container stopped during its start exits 0, not killed by the default handler.
``readside.cli.main`` then keeps the same rule until each command installs its graceful stop."""

from __future__ import annotations

import signal


def _stop_before_work(signum: int, frame: object) -> None:
    raise SystemExit(0)  # nothing has started yet: stopping now loses nothing


def main() -> int:
    signal.signal(signal.SIGTERM, _stop_before_work)
    from readside.cli import main as cli_main

    return cli_main()
