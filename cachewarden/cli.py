"""The ``cachewarden`` console script: one entry point that dispatches to each part of the product.

It lives above the packages it dispatches to (engine <- service <- operator <- command), so none of
them imports it. Subcommands import their package lazily so ``cachewarden runtime`` never loads the
operator or the local-cluster code, and the other way round.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

USAGE = """usage: cachewarden <command> [args...]

commands:
  dev        local Kubernetes cluster with cachewarden in it (up | down | status | kubeconfig | build)
  runtime    run the cache runtime service (engine + HTTP admin/data API)
  operator   run the kopf operator
  crds       print the generated CustomResourceDefinitions
  guide      run one troubleshooting-guide command against every pod of a policy, merged

'cachewarden <command> --help' shows the command's own options.
"""


def _dev(argv: Sequence[str]) -> int:
    from devcluster.cli import main

    return main(argv)


def _runtime(argv: Sequence[str]) -> int:
    from cache_runtime.service.runtime_main import main

    return main(argv)


def _crds(argv: Sequence[str]) -> int:
    from cache_operator.crdgen import main

    return main(argv)


def _guide(argv: Sequence[str]) -> int:
    from cachewarden.guide_cmd import main

    return main(argv)


def _operator(argv: Sequence[str]) -> int:
    from cache_operator.cli import main

    return main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "dev": _dev,
    "runtime": _runtime,
    "crds": _crds,
    "operator": _operator,
    "guide": _guide,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``cachewarden <command> ...`` and return its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in {"-h", "--help", "help"}:
        print(USAGE, end="")
        return 0
    command = COMMANDS.get(args[0])
    if command is None:
        print(
            f"cachewarden: unknown command {args[0]!r}; accepted: {', '.join(sorted(COMMANDS))}",
            file=sys.stderr,
        )
        return 2
    return command(args[1:])


if __name__ == "__main__":
    sys.exit(main())
