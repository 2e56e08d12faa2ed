"""Stage ``evaluate_image@<subset>`` (and the baselines' and references'): one image subset, its mask sources.

Writes ``eval/image/<subset>/<source>.json`` (``eval/methods/<m>/...`` for other methods) for each mask
source, with the metrics of the method and of the guidance mask used as the alpha, and a preview PNG.
``--source`` (repeatable) limits it to some sources; by default it evaluates all of
``test.image.mask_sources`` in one process.
"""

from __future__ import annotations

import argparse
import sys

from maggie.stages import USER_ERRORS, parser_for, run_stage


def evaluate_main(kind: str, doc: str | None, argv: list[str] | None) -> int:
    """The two evaluation stages: one image subset (its mask sources) or the video splits, in one process."""
    from maggie.config.methods import NETWORK
    from maggie.config.params import load_params, section
    from maggie.evaluation.benchmarks import run_benchmarks
    from maggie.evaluation.references import REFERENCES, MissingDependency

    ap = parser_for(doc)
    if kind == "image":
        ap.add_argument("--subset", required=True)
        ap.add_argument("--source", action="append", help="a mask source (repeatable; default: all of "
                        "test.image.mask_sources)")
        ap.set_defaults(tracked=None)
    else:
        ap.add_argument("--split", action="append", help="a split (repeatable; default: all of test.video.splits)")
        ap.add_argument("--tracked", default=None, help="guidance from this project's tracker (flow, flow_network: "
                        "<test.out_dir>/tracked_masks/<tracker>, made by the track_masks stage)")
    ap.add_argument("--method", default=NETWORK,
                    help=f"maggie, a baseline under 'baselines', or a reference ({', '.join(REFERENCES)})")
    ap.add_argument("--weights", default=None, help="weights to evaluate (default: the trained stage's best)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--workers", default=None, help="processes to evaluate in (default: test.workers; auto: one "
                    "per CPU core when there are two benchmarks per process)")

    def body(a: argparse.Namespace) -> None:
        test = section(load_params(a.params), f"test.{kind}")
        if kind == "image":
            benchmarks = [{"subset": a.subset, "source": s} for s in a.source or test["mask_sources"]]
        else:
            benchmarks = [{"split": s} for s in a.split or test["splits"]]
        run_benchmarks(kind, a.params, a.method, a.weights, a.device, benchmarks, a.tracked, a.workers)

    return run_stage(f"evaluate_{kind}", ap, body, argv, USER_ERRORS + (MissingDependency,))


def main(argv: list[str] | None = None) -> int:
    return evaluate_main("image", __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
