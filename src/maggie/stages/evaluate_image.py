"""Stage ``evaluate_image@<subset>-<source>`` (and the baselines' and references'): one image benchmark.

Writes ``eval/image/<subset>/<source>.json`` (``eval/methods/<m>/...`` for other methods) with the
metrics of the method and of the guidance mask used as the alpha, and a preview PNG.
"""

from __future__ import annotations

import argparse
import sys

from maggie.stages import USER_ERRORS, parser_for, run_stage


def evaluate_main(kind: str, doc: str | None, argv: list[str] | None) -> int:
    """The two evaluation stages: one (subset, mask source) image benchmark or one video split per call."""
    from maggie.config.methods import NETWORK
    from maggie.evaluation.benchmarks import run_benchmark
    from maggie.evaluation.references import REFERENCES, MissingDependency

    ap = parser_for(doc)
    if kind == "image":
        ap.add_argument("--subset", required=True)
        ap.add_argument("--source", required=True)
    else:
        ap.add_argument("--split", required=True)
    ap.add_argument("--method", default=NETWORK,
                    help=f"maggie, a baseline under 'baselines', or a reference ({', '.join(REFERENCES)})")
    ap.add_argument("--weights", default=None, help="weights to evaluate (default: the trained stage's best)")
    ap.add_argument("--device", default="auto")

    def body(a: argparse.Namespace) -> None:
        where = {"subset": a.subset, "source": a.source} if kind == "image" else {"split": a.split}
        run_benchmark(kind, a.params, a.method, a.weights, a.device, **where)

    return run_stage(f"evaluate_{kind}", ap, body, argv, USER_ERRORS + (MissingDependency,))


def main(argv: list[str] | None = None) -> int:
    return evaluate_main("image", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
