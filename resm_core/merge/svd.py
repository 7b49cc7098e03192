"""Primitives shared by the SVD family (TSV-M, Iso-C, RESM): per-task truncated SVD, rank rules,
concatenation, orthogonalisation by the polar factor, reconstruction.

Exact SVD (LAPACK gesdd / cuSOLVER) is the default. `method='lowrank'` uses the randomized range
finder (`torch.svd_lowrank`, Halko, Martinsson & Tropp 2011) with q = k + oversample columns and
`niter` power iterations; its error in the rank-k approximation is, with high probability, at most
(1 + 9 sqrt(q min(m, n)))^(1/(2 niter + 1)) times sigma_{k+1} in spectral norm (HMT 2011, Cor. 10.10),
i.e. close to the best rank-k error when the spectrum decays. benchmarks/merge_bench.py measures it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from resm_core.merge.api import Param

log = logging.getLogger(__name__)

SVD_METHOD = Param(
    "svd",
    "exact",
    "per-task SVD: exact, or lowrank (randomized, much faster on big matrices)",
    kind="choice",
    choices=("exact", "lowrank"),
)
SVD_OVERSAMPLE = Param("svd_oversample", 16, "extra columns for the lowrank SVD", kind="int", low=0)
SVD_NITER = Param("svd_niter", 2, "power iterations for the lowrank SVD", kind="int", low=0)
RANK_TOL = Param(
    "rank_tol",
    1e-3,
    "a task keeps no singular value at or below rank_tol x its largest (its numerical rank: "
    "a LoRA delta's zero directions are arbitrary); 0 keeps the TSV reference's floor(r/T)",
    low=0.0,
    high=1.0,
    high_open=True,
)
SVD_PARAMS = (SVD_METHOD, SVD_OVERSAMPLE, SVD_NITER, RANK_TOL)


def robust_svd(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, S, V^T) that survives LAPACK's divide-and-conquer failing to converge.

    gesdd gives up on matrices with many repeated or zero singular values: seen on 2 CPU threads on
    RESM's concatenated V^T of two LoRA experts (518 x 576, singular values 0 and sqrt 2 many
    times over). Retried in float64, then with LAPACK's slower, sturdier gesvd (SciPy)."""
    try:
        u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
        return u, s, vh
    except torch.linalg.LinAlgError:
        log.debug("SVD of a %s %s matrix did not converge; retrying in float64", tuple(matrix.shape), matrix.dtype)
    try:
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    except torch.linalg.LinAlgError:
        import scipy.linalg

        log.debug("float64 SVD did not converge either; using LAPACK gesvd")
        u, s, vh = (
            torch.from_numpy(x)
            for x in scipy.linalg.svd(
                matrix.detach().double().cpu().numpy(), full_matrices=False, lapack_driver="gesvd"
            )
        )
    return tuple(x.to(device=matrix.device, dtype=matrix.dtype) for x in (u, s, vh))


@dataclass
class Components:
    """Leading singular triplets of one matrix: u [m, k], s [k], vh [k, n]."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor

    @property
    def rank(self) -> int:
        return self.s.shape[0]

    def truncate(self, k: int) -> Components:
        return Components(self.u[:, :k], self.s[:k], self.vh[:k])

    def within_rank(self, tol: float) -> Components:
        """Only the components above the numerical-rank tolerance (see `numerical_rank`)."""
        return self.truncate(numerical_rank(self.s, tol))


def numerical_rank(s: torch.Tensor, tol: float) -> int:
    """How many of the descending singular values `s` exceed tol x the largest; tol = 0 counts
    them all (the reference behaviour), and a zero matrix has rank 0 for any tol > 0."""
    if tol <= 0:
        return s.shape[0]
    if s.shape[0] == 0 or float(s[0]) <= 0:
        return 0
    return int((s > tol * s[0]).sum())


def leading_components(
    matrix: torch.Tensor,
    k: int,
    method: str = "exact",
    oversample: int = 16,
    niter: int = 2,
    seed: int = 0,
    rank_tol: float = 0.0,
) -> Components:
    """The top-k singular triplets (k <= min(m, n)), fewer where the matrix's numerical rank
    (tolerance `rank_tol`) is lower. The lowrank path draws its random test matrix from a
    generator seeded with `seed`, leaving the global RNG untouched."""
    r = min(matrix.shape)
    k = max(0, min(k, r))
    if method == "lowrank" and k + oversample < r:
        devices = [matrix.device] if matrix.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            u, s, v = torch.svd_lowrank(matrix, q=k + oversample, niter=niter)
        return Components(u[:, :k], s[:k], v[:, :k].T).within_rank(rank_tol)
    u, s, vh = robust_svd(matrix)
    return _own_memory(Components(u[:, :k], s[:k], vh[:k]).within_rank(rank_tol), u.numel() + vh.numel())


def _own_memory(c: Components, held: int) -> Components:
    """`c` in tensors of its own when its slices would hold much larger factors (`held` entries) alive: an
    exact SVD of a 14336 x 4096 matrix keeping a third of its rank kept all 235 MB of U per task."""
    if 2 * (c.u.numel() + c.vh.numel()) > held:
        return c
    return Components(c.u.clone(), c.s.clone(), c.vh.clone())


SKETCH_OVERSAMPLE = 8


def low_rank_components(matrix: torch.Tensor, k: int, rank_tol: float, seed: int) -> Components | None:
    """The exact SVD of `matrix` when its numerical rank is below k (a LoRA delta), else None.

    A Gaussian sketch Y = X Omega with k + 8 columns has the rank of X whenever that rank is below
    k + 8 (with probability 1), at a cost of about k/min(m, n) of one SVD; X = Q (Q^T X) with Q an
    orthonormal basis of Y's range then gives the SVD from a small rank x n matrix."""
    m, n = matrix.shape
    q = k + SKETCH_OVERSAMPLE
    if rank_tol <= 0:
        return None
    if q >= min(m, n):
        full = leading_components(matrix, min(m, n), rank_tol=rank_tol)
        return full if full.rank < k else None
    omega = torch.randn(n, q, generator=torch.Generator().manual_seed(seed)).to(matrix)
    sketch = matrix @ omega
    try:  # the common, full-rank case needs the singular values only
        values = torch.linalg.svdvals(sketch)
    except torch.linalg.LinAlgError:
        values = robust_svd(sketch)[1]
    if numerical_rank(values, rank_tol) >= k:
        return None
    uy, sy, _ = robust_svd(sketch)
    basis = uy[:, : numerical_rank(sy, rank_tol)]
    ub, sb, vhb = robust_svd(basis.T @ matrix)
    return Components(basis @ ub, sb, vhb).within_rank(rank_tol)


def project(matrix: torch.Tensor, onto: Components, rank_tol: float) -> Components:
    """The SVD of U U^T X V V^T for the column and row bases U, V^T of `onto`: X restricted to
    the subspaces `onto` spans, computed from the small rank x rank core U^T X V."""
    if onto.rank == 0:
        return onto
    uc, sc, vhc = robust_svd(onto.u.T @ matrix @ onto.vh.T)
    return Components(onto.u @ uc, sc, vhc @ onto.vh).within_rank(rank_tol)


def energy_rank(s: torch.Tensor, eta: float, total_energy: float | None = None) -> int:
    """Smallest k whose leading singular values hold a fraction `eta` of the energy sum(s^2)
    (or of `total_energy`, e.g. the squared Frobenius norm when only the top of s is known)."""
    energy = s.double() ** 2
    total = float(energy.sum()) if total_energy is None else float(total_energy)
    if total <= 0:
        return 1
    cum = energy.cumsum(0)
    k = int(torch.searchsorted(cum, torch.tensor(eta * total, dtype=cum.dtype))) + 1
    return max(1, min(k, s.shape[0]))


GRAM_MAX_CONDITION = 1e4  # of A^T A, i.e. 100 for A: beyond it the Gram route loses fp32 digits


def polar_factor(matrix: torch.Tensor, method: str = "svd") -> torch.Tensor:
    """The orthonormal polar factor P Q^T of matrix = P S Q^T: the closest matrix with
    orthonormal columns (or rows, for a wide matrix) in Frobenius norm.

    `method='gram'` computes the same factor as A (A^T A)^(-1/2) from an eigendecomposition of the
    small Gram matrix (about 3x faster than an SVD on 2 cores at 5632 x 2048); it falls back to the
    SVD when the Gram matrix is ill-conditioned or singular, where the two would differ."""
    if method == "gram":
        wide = matrix.shape[0] < matrix.shape[1]
        a = matrix.T if wide else matrix
        evals, evecs = torch.linalg.eigh(a.T @ a)
        if evals[0] > 0 and evals[-1] / evals[0] < GRAM_MAX_CONDITION:
            p = a @ ((evecs * evals.rsqrt()) @ evecs.T)
            polar: torch.Tensor = p.T if wide else p
            return polar
    p, _, qh = robust_svd(matrix)
    return p @ qh


def concatenate(parts: list[Components]) -> Components:
    """Stack the tasks' components side by side: U = [U_1 ... U_T], s = [s_1 ... s_T], V^T likewise.
    This is TSV-M's zero-padded r-column layout without the zero columns, which contribute
    nothing after multiplication by their zero singular values."""
    return Components(
        torch.cat([p.u for p in parts], dim=1), torch.cat([p.s for p in parts]), torch.cat([p.vh for p in parts], dim=0)
    )


def orthogonalised_sum(parts: list[Components], polar: str = "svd", scale: float = 1.0) -> torch.Tensor:
    """TSV-M's reconstruction, times `scale`: replace the concatenated U and V^T by their polar factors
    (removing the interference between tasks' singular vectors), then U diag(s) V^T.

    It consumes `parts` (the list is emptied) and frees each factor once it is replaced, so at most two
    m x r matrices are alive at a time: an 8B model's 14336 x 4096 MLP matrices made this the peak of a merge."""
    cat = concatenate(parts)
    parts.clear()
    if cat.rank == 0:
        return cat.u.new_zeros(cat.u.shape[0], cat.vh.shape[1])
    s, vh = cat.s, cat.vh
    u = polar_factor(cat.u, polar)
    del cat
    vh = polar_factor(vh, polar)
    merged = torch.mul(u, s, out=u) @ vh  # the polar factor is a fresh tensor: (u * s) @ vh without a copy
    return merged.mul_(scale) if scale != 1.0 else merged


def polar_method(params: Mapping[str, Any]) -> str:
    """Exact merges use SVD polar factors; the lowrank option also takes the Gram route."""
    return "gram" if params.get("svd") == "lowrank" else "svd"


def reconstruct(c: Components) -> torch.Tensor:
    return (c.u * c.s) @ c.vh


def per_task_rank(r: int, n_tasks: int, fraction: float | None) -> int:
    """Components kept per task: floor(r/T) by default (TSV-M), else floor(fraction * r), capped at
    floor(r/T) so the concatenated rank never exceeds r, and at least 1."""
    cap = r // n_tasks
    k = cap if fraction is None else int(fraction * r + 1e-9)
    return max(1, min(k, cap)) if cap >= 1 else 1
