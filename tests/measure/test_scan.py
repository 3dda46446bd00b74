"""Scanned runs of identical groups of blocks (periodic patterns) give the same measurements as the
unrolled loop, in float64 (1e-12 decades: the same operations in another order); `engine.layout`
finds the runs; `scan` is validated."""

import chex
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure
from jaxvg.measure import engine, plan
from jaxvg.nn import activations, models

from .references import (
    TOL64,
    TinyTransformer,
    assert_flow_close,
    assert_spectra_close,
    brute_force_flow,
    data,
    token_loss,
)


class AlternatingNet(nnx.Module):
    """An MLP whose blocks alternate between two activations (two graphdefs: period 2), after a
    first block of another input size, and a linear head."""

    def __init__(self, d_in, width, pairs, d_out, *, acts=("tanh", "relu"), dtype=jnp.float32, rngs):
        def block(fan_in, act):
            return models.Block(
                fan_in, width, activation=activations.get(act), kernel_init=nnx.initializers.lecun_normal(),
                bias_init=nnx.initializers.normal(0.1), param_dtype=dtype, rngs=rngs,
            )  # fmt: skip

        self.in_features = d_in
        self.blocks = nnx.List([block(d_in, "tanh")] + [block(width, a) for _ in range(pairs) for a in acts])
        self.head = nnx.Linear(width, d_out, param_dtype=dtype, rngs=rngs)

    def __call__(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


@pytest.mark.parametrize(
    "ids,min_run,want",
    [
        ([0, 0, 0, 0], 2, [(0, 1, 4)]),
        ([0, 0, 0, 0], 5, [(0, 1, 0), (1, 1, 0), (2, 1, 0), (3, 1, 0)]),
        ([0, 1, 2, 1, 2, 1, 2, 3], 4, [(0, 1, 0), (1, 2, 3), (7, 1, 0)]),
        ([0, 1, 2, 0, 1, 2, 0, 1], 2, [(0, 3, 2), (6, 2, 1)][:1] + [(6, 1, 0), (7, 1, 0)]),
        ([5, 5, 1, 2, 1, 2], 2, [(0, 1, 2), (2, 2, 2)]),
        ([0, 1, 0, 1], None, [(0, 1, 0), (1, 1, 0), (2, 1, 0), (3, 1, 0)]),
        ([0, 1, 2, 0, 1, 2], 2, [(0, 3, 2)]),
    ],
)
def test_layout_finds_periodic_runs(ids, min_run, want):
    assert engine.layout(ids, min_run) == want


def test_layout_max_period_and_ties_take_the_shortest_period():
    ids = [0, 1, 2, 3] * 3
    assert engine.layout(ids, 2, max_period=3) == [(i, 1, 0) for i in range(12)]
    assert engine.layout(ids, 2, max_period=4) == [(0, 4, 3)]
    assert engine.layout([7] * 8, 2) == [(0, 1, 8)]  # period 1, not 2 x 4


@pytest.mark.slow  # over 20 s on 2 cores, cold cache
def test_period_two_scan_equals_unrolled_and_brute_force(x64):
    model = AlternatingNet(3, 6, 4, 2, dtype=jnp.float64, rngs=nnx.Rngs(0))
    x, y = data(1, 5, 3, 2, jnp.float64)
    p, _ = plan.lookup(model, train=False, scan=True)
    assert [(r.start, r.n, r.scan, r.period) for r in p.program.runs] == [(0, 1, False, 1), (1, 8, True, 2)]
    scanned = measure.gradient_flow(model, x, y, scan=True)
    unrolled = measure.gradient_flow(model, x, y, scan=False)
    chex.assert_trees_all_close(scanned, unrolled, rtol=0, atol=1e-12)
    ref = brute_force_flow(model, x, y)
    dead = ref.pop("dead_fraction")  # the reference takes this mean in float32 (relu's mask)
    assert_flow_close(scanned, ref, TOL64)
    chex.assert_trees_all_close(scanned.dead_fraction, dead, atol=1e-7)
    chex.assert_trees_all_close(
        measure.jacobian_norms(model, x, scan=True),
        measure.jacobian_norms(model, x, scan=False),
        rtol=0,
        atol=1e-12,
    )
    chex.assert_trees_all_close(
        measure.jacobian_norms(model, x, method="hutchinson", num_probes=4, scan=True),
        measure.jacobian_norms(model, x, method="hutchinson", num_probes=4, scan=False),
        rtol=0,
        atol=1e-12,
    )
    assert_spectra_close(
        measure.jacobian_spectrum(model, x[0], layers=(0, 3), scan=True),
        measure.jacobian_spectrum(model, x[0], layers=(0, 3), scan=False),
        blocks=9,
    )
    gd, state = nnx.split(model)
    from_split = measure.gradient_flow_from_split(gd, state, x, y, loss="mse", scan=True)
    chex.assert_trees_all_close(from_split, unrolled, rtol=0, atol=1e-12)


def test_a_stretch_cut_into_runs_measures_as_unrolled(x64, monkeypatch):
    # 8 arrays per run: the 5 repeats of a tanh/relu pair (4 arrays) become runs of 2, 2 and an
    # unrolled last pair, each run stacked by its own program (16 scanned arrays > 8)
    monkeypatch.setattr(engine, "SCAN_CHUNK_ARRAYS", 8)
    model = AlternatingNet(3, 6, 5, 2, dtype=jnp.float64, rngs=nnx.Rngs(2))
    x, y = data(3, 5, 3, 2, jnp.float64)
    p, leaves = plan.lookup(model, train=False, scan=True)
    assert [(r.start, r.n, r.scan, r.period) for r in p.program.runs] == [
        (0, 1, False, 1), (1, 4, True, 2), (5, 4, True, 2), (9, 1, False, 1), (10, 1, False, 1)
    ]  # fmt: skip
    _, stacked = p.inputs(leaves)
    assert all(isinstance(a, jax.Array) and a.shape[0] == 2 for run in stacked for a in run)
    chex.assert_trees_all_close(
        measure.gradient_flow(model, x, y, scan=True), measure.gradient_flow(model, x, y, scan=False),
        rtol=0, atol=1e-12,
    )  # fmt: skip
    for kw in ({}, {"method": "hutchinson", "num_probes": 4}):
        chex.assert_trees_all_close(
            measure.jacobian_norms(model, x, scan=True, **kw), measure.jacobian_norms(model, x, scan=False, **kw),
            rtol=0, atol=1e-12,
        )  # fmt: skip
    assert_spectra_close(
        measure.jacobian_spectrum(model, x[0], layers=(0, 6), scan=True),
        measure.jacobian_spectrum(model, x[0], layers=(0, 6), scan=False),
        blocks=11,
    )


def test_a_scanned_gradient_flow_keeps_two_arrays_per_block_for_the_backward_pass():
    # tanh blocks: autodiff would keep h_in, tanh(z) and 1 - tanh(z) of every step; under the
    # dots-saveable policy the scan keeps h_in and the matmul's output, and recomputes the rest
    from jaxvg.measure import flow

    model = jaxvg.MLP(8, 8, 6, 8, activation="tanh", rngs=nnx.Rngs(0))
    x, y = jnp.ones((4, 8)), jnp.zeros((4, 8))
    program, arrays = engine.split_blocks(engine.mode_view(model, False), scan=True)
    assert [(r.n, r.scan) for r in program.runs] == [(6, True)]
    jaxpr = jax.make_jaxpr(lambda a: flow._flow_core(program, a, x, y, None, loss="mse"))(arrays).jaxpr
    forward = next(e for e in jaxpr.eqns if e.primitive.name == "scan")
    per_step = [v.aval.shape for v in forward.outvars if v.aval.shape == (6, 4, 8)]
    assert len(per_step) == 2


def test_transformer_attention_and_mlp_blocks_scan_as_pairs(x64):
    model = TinyTransformer(layers=3, dtype=jnp.float64, rngs=nnx.Rngs(1))
    tokens = jax.random.randint(jax.random.key(0), (2, 4), 0, 7)
    labels = jax.random.randint(jax.random.key(1), (2, 4), 0, 7)
    p, _ = plan.lookup(model, train=False, scan=True)
    assert [(r.n, r.scan, r.period) for r in p.program.runs] == [(6, True, 2)]
    scanned = measure.gradient_flow(model, tokens, labels, loss=token_loss, scan=True)
    unrolled = measure.gradient_flow(model, tokens, labels, loss=token_loss, scan=False)
    chex.assert_trees_all_close(scanned, unrolled, rtol=0, atol=1e-12)


def test_chunk_layout_cuts_long_runs_into_near_equal_pieces():
    per_run = engine.SCAN_CHUNK_ARRAYS // 2  # repeats of a block of 2 arrays that one run holds
    n = 2 * per_run + 1  # needs three runs
    lay = engine.chunk_layout([(0, 1, 0), (1, 1, n)], [2] * (n + 1))
    sizes = [r for _, _, r in lay[1:]]
    assert lay[0] == (0, 1, 0) and len(sizes) == 3 and sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1 and max(sizes) <= per_run
    assert [start for start, _, _ in lay[1:]] == [1, 1 + sizes[0], 1 + sizes[0] + sizes[1]]
    assert all(k == 1 for _, k, _ in lay)
    # period 2 of blocks holding the whole limit each: two repeats per run at least; a last piece
    # of one repeat is unrolled, block by block
    big = engine.SCAN_CHUNK_ARRAYS
    assert engine.chunk_layout([(3, 2, 5)], [0, 0, 0] + [big] * 10) == [
        (3, 2, 2), (7, 2, 2), (11, 1, 0), (12, 1, 0)
    ]  # fmt: skip
    assert engine.chunk_layout([(0, 1, 0), (1, 1, 0)], [5, 5]) == [(0, 1, 0), (1, 1, 0)]
    assert engine.chunk_layout([(0, 1, 4)], [2] * 4) == [(0, 1, 4)]  # short: one run


def test_auto_scans_long_periodic_runs_only_and_the_kernel_concatenates_no_stack():
    deep = jaxvg.MLP(4, 8, 300, 1, rngs=nnx.Rngs(0))  # block 1 takes 4 features: 1 + 299 identical
    p, leaves = plan.lookup(deep, train=False, scan="auto")
    runs = [(r.start, r.n, r.scan, r.period) for r in p.program.runs]
    # the 299 identical blocks (kernel and bias: 2 arrays each) scanned in near-equal runs of at
    # most SCAN_CHUNK_ARRAYS arrays
    pieces = -(-299 // (engine.SCAN_CHUNK_ARRAYS // 2))
    sizes = [299 // pieces + (i < 299 % pieces) for i in range(pieces)]
    starts = [1 + sum(sizes[:i]) for i in range(pieces)]
    assert runs == [(0, 1, False, 1)] + [(s, n, True, 1) for s, n in zip(starts, sizes, strict=True)]
    # each run's stacked arrays go into its scan as they come: no rank-3 (stacked kernel) concatenate
    x, y = jnp.ones((2, 4)), jnp.zeros((2, 1))
    measure.gradient_flow(deep, x, y)
    kernel = next(iter(p._kernels.values()))
    hlo = kernel.lower(*p.inputs(leaves), x, y, None).as_text()
    assert hlo.count("stablehlo.while") >= pieces
    assert not [line for line in hlo.splitlines() if "concatenate" in line and "x8x8xf32>" in line]
    pairs = AlternatingNet(4, 8, engine.SCAN_MIN_RUN // 2, 1, rngs=nnx.Rngs(0))  # 1 + 128 blocks
    p, _ = plan.lookup(pairs, train=False, scan="auto")
    assert [(r.n, r.scan, r.period) for r in p.program.runs] == [
        (1, False, 1),
        (engine.SCAN_MIN_RUN, True, 2),
    ]
    short = AlternatingNet(4, 8, 3, 1, rngs=nnx.Rngs(0))
    p, _ = plan.lookup(short, train=False, scan="auto")
    assert not any(r.scan for r in p.program.runs)


@pytest.mark.parametrize("scan", ["yes", 1, None])
def test_invalid_scan_names_argument_value_and_choices(scan):
    model = jaxvg.MLP(3, 4, 2, 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"`scan` must be one of \['auto', True, False\], got"):
        measure.gradient_flow(model, jnp.ones((2, 3)), jnp.zeros((2, 1)), scan=scan)
    with pytest.raises(ValueError, match=r"`scan` must be one of"):
        measure.Probe(model, scan=scan)
