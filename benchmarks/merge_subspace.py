"""How much of each merge's delta lies outside the experts' own subspaces, on a finished grid.

    python benchmarks/merge_subspace.py --results results/default [--methods tsv_m resm]

For every merge arm {method}/{combo}/{hp} under RESULTS/models/merge, the merge is run again from
its manifest (method, parameters, seed) with fp32 output, so that the stored dtype does not blur
the comparison, and for every 2-D tensor that the method merged itself (vocabulary matrices
follow the vocab rule and are skipped) the merged delta M - base is compared with the task
vectors of the combo's experts (RESULTS/taskvec/{dim}): the share of its energy outside the span
of their columns, and outside the span of their rows.
LoRA experts have low-rank task vectors, so a merge that adds directions no expert used shows up
here. Each expert's span comes from its exact SVD (numerical rank at 1e-4 of its largest singular
value), then their union.
Not a test: a measurement on real merges, reported in the README and closing notes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resm_core.checkpoint.names import is_vocab_tensor  # noqa: E402
from resm_core.checkpoint.reader import CheckpointReader  # noqa: E402
from resm_core.merge.engine import MergeRequest, merge  # noqa: E402

TOL = 1e-4


def span(blocks: list[torch.Tensor]) -> torch.Tensor:
    """An orthonormal basis of the union of the column spans of `blocks`: each block's numerical span
    (exact SVD, singular values above TOL x its own largest), then the union. Per block, because the
    experts' scales differ; exact, because a sketch's basis carries the blocks' fp32 noise into it."""
    bases = []
    for block in blocks:
        u, s, _ = torch.linalg.svd(block.float(), full_matrices=False)
        rank = int((s > TOL * s[0]).sum()) if s.numel() and s[0] > 0 else 0
        bases.append(u[:, :rank].double())
    u, s, _ = torch.linalg.svd(torch.cat(bases, dim=1), full_matrices=False)
    return u[:, : int((s > 1e-6).sum())]


def outside_shares(merged: torch.Tensor, deltas: list[torch.Tensor]) -> tuple[float, float, float]:
    """(energy outside the column span, outside the row span, total energy) of the merged delta."""
    cols = span(deltas)
    rows = span([d.T for d in deltas])
    total = float(merged.pow(2).sum())
    out_col = float((merged - cols @ (cols.T @ merged)).pow(2).sum())
    out_row = float((merged - (merged @ rows) @ rows.T).pow(2).sum())
    return out_col, out_row, total


def measure(results: Path, methods: list[str] | None) -> list[dict]:
    base = CheckpointReader(results / "base")
    vocab = (base.config or {}).get("vocab_size")
    rows = []
    for arm in sorted((results / "models" / "merge").glob("*/*/*")):
        method, combo, hp = arm.parts[-3:]
        if methods and method not in methods:
            continue
        manifest = json.loads((arm / "resm_manifest.json").read_text())
        params = {k: v for k, v in manifest["params"].items() if k != "weights"}
        tvs = [results / "taskvec" / dim for dim in combo.split("+")]
        tmp = Path(tempfile.mkdtemp(prefix="subspace-", dir=results))
        merge(
            MergeRequest(
                base=results / "base",
                experts=tvs,
                method=method,
                params=params,
                out=tmp / "m",
                seed=manifest["seed"],
                out_dtype="float32",
                progress=False,
            )
        )
        merged = CheckpointReader(tmp / "m")
        experts = [CheckpointReader(tv) for tv in tvs]
        out_col = out_row = total = 0.0
        for name in merged.keys:
            shape = tuple(base.shape(name))
            if len(shape) != 2 or is_vocab_tensor(name, shape, vocab):
                continue
            b = base.get(name).double()
            delta = merged.get(name).double() - b
            deltas = [e.get(name).double() for e in experts]
            c, r, t = outside_shares(delta, deltas)
            out_col, out_row, total = out_col + c, out_row + r, total + t
        shutil.rmtree(tmp)
        rows.append(
            {"arm": f"{method}/{combo}/{hp}", "outside_columns": out_col / total, "outside_rows": out_row / total}
        )
        print(
            f"{method}/{combo}/{hp}: {100 * out_col / total:.3f}% of the merged delta's energy outside the "
            f"experts' column span, {100 * out_row / total:.3f}% outside their row span",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/default"))
    parser.add_argument("--methods", nargs="*", help="only these merge methods (default: all)")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    args = parser.parse_args()
    rows = measure(args.results, args.methods)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
