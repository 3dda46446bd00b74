"""On GPU and TPU the measures take no branch chosen by data, and a training step none.

XLA's GPU runtime executes a conditional by copying its predicate to the host and blocking until
the device is done (its ConditionalThunk); a loop with a known trip count needs no such copy. So a
`lax.cond` per block or per training step would stall the device where a `lax.scan` does not. The
measures take branch-free paths there (`lax.platform_dependent`), the training chunk too
(`jaxvg.train.step.branch_free_steps`). These tests walk the jaxprs as each platform lowers them
(`data_conds`): `lax.platform_dependent` switches are resolved to the platform's branch, every
other `cond` is counted. On "cpu" the branches are there (they save work where a conditional costs
next to nothing), which also shows that the walk finds them.
"""

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.extend import core as jcore

import jaxvg
from jaxvg import measure, train
from jaxvg.nn import rnn
from jaxvg.train import step


def _sub_jaxprs(eqn: Any) -> Iterator[tuple[str, Any]]:
    for name, value in eqn.params.items():
        for v in value if isinstance(value, tuple | list) else (value,):
            if isinstance(v, jcore.ClosedJaxpr):
                yield name, v.jaxpr
            elif isinstance(v, jcore.Jaxpr):
                yield name, v


def data_conds(jaxpr: Any, platform: str, path: tuple[str, ...] = (), in_loop: bool = False) -> list:
    """[(path, in_loop)]: every `cond` of `jaxpr` (and of the jaxprs inside it) whose branch is
    chosen by a value, as `platform` ("cpu", "cuda", "tpu") lowers it; `path` names the enclosing
    primitives ("cond[i]" for branch i), `in_loop` says whether a `scan` or `while` encloses it."""
    found = []
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "cond":
            platforms = eqn.params.get("branches_platforms")
            branches = eqn.params["branches"]
            if platforms:  # a platform switch: only the platform's branch is lowered
                pick = next((i for i, p in enumerate(platforms) if p is not None and platform in p), None)
                if pick is None:
                    pick = next(i for i, p in enumerate(platforms) if p is None)
                found += data_conds(branches[pick].jaxpr, platform, (*path, f"platform[{pick}]"), in_loop)
                continue
            found.append(((*path, "cond"), in_loop))
            for i, branch in enumerate(branches):
                found += data_conds(branch.jaxpr, platform, (*path, f"cond[{i}]"), in_loop)
            continue
        loop = in_loop or name in ("scan", "while")
        for param, sub in _sub_jaxprs(eqn):
            found += data_conds(sub, platform, (*path, f"{name}.{param}"), loop)
    return found


X = jnp.ones((5, 4))
Y = jnp.zeros((5, 2))


def _split(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, (params, rest)


def _kernels():
    mlp = _split(jaxvg.MLP(4, 8, 3, 2, rngs=nnx.Rngs(0)))
    callable_act = _split(jaxvg.MLP(4, 8, 3, 2, activation=jax.nn.soft_sign, rngs=nnx.Rngs(0)))
    deep = _split(jaxvg.MLP(4, 8, 6, 2, rngs=nnx.Rngs(0)))
    cell = _split(rnn.RNN(1, 8, None, cell="lstm", rngs=nnx.Rngs(0)))
    tanh_rnn = _split(rnn.RNN(1, 8, None, cell="tanh", rngs=nnx.Rngs(0)))
    xs, ys = jnp.ones((2, 20, 1)), jnp.zeros((2, 8))
    key = jax.random.key(0)
    return {
        "gradient_flow": (lambda s: measure.gradient_flow_from_split(mlp[0], s, X, Y, loss="mse"), mlp[1]),
        "gradient_flow, callable activation": (
            lambda s: measure.gradient_flow_from_split(callable_act[0], s, X, Y, loss="mse"),
            callable_act[1],
        ),
        "gradient_flow, scanned": (
            lambda s: measure.gradient_flow_from_split(deep[0], s, X, Y, loss="mse", scan=True),
            deep[1],
        ),
        "jacobian_norms exact": (lambda s: measure.jacobian_norms_from_split(mlp[0], s, X), mlp[1]),
        "jacobian_norms hutchinson": (
            lambda s: measure.jacobian_norms_from_split(
                mlp[0], s, X, method="hutchinson", num_probes=2, key=key
            ),
            mlp[1],
        ),
        "signal_propagation": (lambda s: measure.signal_propagation_from_split(mlp[0], s, X), mlp[1]),
        "time_flow lstm": (lambda s: measure.time_flow_from_split(cell[0], s, xs, ys), cell[1]),
        "time_flow tanh": (lambda s: measure.time_flow_from_split(tanh_rnn[0], s, xs, ys), tanh_rnn[1]),
    }


KERNELS = _kernels()


@pytest.mark.parametrize("name", list(KERNELS))
def test_no_branch_chosen_by_data_on_gpu_and_tpu(name):
    fn, state = KERNELS[name]
    jaxpr = jax.make_jaxpr(fn)(state).jaxpr
    assert data_conds(jaxpr, "cuda") == []
    assert data_conds(jaxpr, "tpu") == []
    assert data_conds(jaxpr, "cpu"), "the CPU path keeps its branches: the walk must find them"


# --------------------------------------------------------------------------------------------------
# The training chunk
# --------------------------------------------------------------------------------------------------

N_TRAIN = 32
XT = np.random.default_rng(0).normal(size=(N_TRAIN, 4)).astype(np.float32)
YT = np.random.default_rng(1).normal(size=(N_TRAIN, 2)).astype(np.float32)
FIT = {"loss": "mse", "optimizer": "adam", "learning_rate": 1e-2, "progress": False}


@pytest.fixture
def branch_free(monkeypatch):
    """Build the training chunk as on GPU and TPU (fresh programs, before and after)."""
    step.compiled_chunk.cache_clear()
    monkeypatch.setattr(step, "branch_free_steps", lambda: True)
    yield
    step.compiled_chunk.cache_clear()


def _chunk_conds(steps, log_every, **config):
    """The data-chosen conds of the chunk program as "cuda" lowers it: (outside any loop, in the
    scan of a chunk whose steps all come before the end, in the other scan)."""
    graphdef, params, rest = train.stack_models([jaxvg.MLP(4, 8, 3, 2, rngs=nnx.Rngs(0))])
    cfg = train.TrainConfig(steps=steps, log_every=log_every, **FIT, **config)
    trainer = train.Trainer(graphdef, params, rest, (XT, YT), cfg)
    args = (trainer.init_state(params, rest), trainer.learning_rate, train.data_keys([0]), jnp.int32(0))
    found = data_conds(jax.make_jaxpr(trainer.program)(*args, trainer.arrays).jaxpr, "cuda")
    outside = [p for p, loop in found if not loop]
    # the chunk-level cond: branch 1 (its predicate true) is the chunk of applied steps
    branch = [next((q for q in p if q.startswith("cond[")), None) for p, _ in found]
    full = [p for (p, loop), b in zip(found, branch, strict=True) if loop and b == "cond[1]"]
    guarded = [p for (p, loop), b in zip(found, branch, strict=True) if loop and b == "cond[0]"]
    return outside, full, guarded


@pytest.mark.parametrize(
    "config", [{}, {"batch_size": 8}, {"batch_size": 8, "schedule": "cosine", "clip_norm": 1.0}]
)
def test_a_chunk_of_training_steps_takes_no_per_step_branch_on_gpu_and_tpu(branch_free, config):
    outside, full, guarded = _chunk_conds(20, 5, **config)
    assert len(outside) == 1  # one conditional per chunk: are all its steps before the end?
    assert full == []  # no conditional per step in the chunks of applied steps
    assert guarded  # the last chunks skip the steps past the end


@pytest.mark.parametrize(
    "steps, log_every, monitor_every", [(20, 5, 10), (20, 5, 5), (20, 10, 5), (20, 10, 2)]
)
def test_the_monitor_records_without_a_per_step_branch_where_the_periods_divide(
    branch_free, steps, log_every, monitor_every
):
    outside, full, guarded = _chunk_conds(steps, log_every, monitor_every=monitor_every)
    assert full == []
    assert guarded


def test_the_per_step_branches_that_remain_on_gpu(branch_free):
    # a monitor whose records fall at positions that vary by chunk (neither period divides)
    assert len(_chunk_conds(24, 6, monitor_every=4)[1]) == 1
    # a chunk spanning more than MAX_CHUNK_EPOCHS epochs draws each epoch's order under a branch
    per_epoch = N_TRAIN // 8
    k = step.MAX_CHUNK_EPOCHS * per_epoch  # (k - 1) // per_epoch + 2 epochs: one too many
    assert len(_chunk_conds(2 * k, k, batch_size=8)[1]) == 1


def test_the_cpu_chunk_keeps_its_per_step_branches(monkeypatch):
    monkeypatch.setattr(step, "branch_free_steps", lambda: False)  # the CPU build, on any platform
    step.compiled_chunk.cache_clear()
    graphdef, params, rest = train.stack_models([jaxvg.MLP(4, 8, 3, 2, rngs=nnx.Rngs(0))])
    trainer = train.Trainer(graphdef, params, rest, (XT, YT), train.TrainConfig(steps=20, log_every=5, **FIT))
    args = (trainer.init_state(params, rest), trainer.learning_rate, train.data_keys([0]), jnp.int32(0))
    found = data_conds(jax.make_jaxpr(trainer.program)(*args, trainer.arrays).jaxpr, "cpu")
    step.compiled_chunk.cache_clear()
    # one scan, each step under its "past the end?" branch, the norms under theirs; no chunk-level one
    assert [loop for _, loop in found] == [True, True]


@pytest.mark.parametrize(
    "config",
    [
        {"steps": 23, "log_every": 5},  # a partial last chunk, then the end point
        {"steps": 20, "log_every": 5},
        {"steps": 23, "log_every": 5, "batch_size": 8},  # epochs of 4 steps across chunk boundaries
        {"steps": 9, "log_every": 9, "batch_size": 16},  # one chunk, then the end point
        {"steps": 12, "log_every": 4, "monitor_every": 4},
        {"steps": 23, "log_every": 4, "monitor_every": 8},  # one record in every other chunk
        {"steps": 23, "log_every": 6, "monitor_every": 3},  # groups of 3 steps, one record each
        {"steps": 14, "log_every": 6, "monitor_every": 4},  # neither divides: a branch per step
    ],
)
def test_branch_free_training_gives_the_same_run(monkeypatch, config):
    def fit():
        step.compiled_chunk.cache_clear()
        model = lambda rngs: jaxvg.MLP(4, 8, 3, 2, rngs=rngs)  # noqa: E731
        return jaxvg.fit(model, (XT, YT), seeds=[0, 1], **FIT, **config)

    monkeypatch.setattr(step, "branch_free_steps", lambda: False)  # the CPU build, on any platform
    want = fit()
    monkeypatch.setattr(step, "branch_free_steps", lambda: True)
    got = fit()
    step.compiled_chunk.cache_clear()
    assert sorted(got.history) == sorted(want.history)
    # the same computation, fused differently by XLA (inside a conditional or not): float32 rounding
    for name in want.history:
        pairs = zip(jax.tree.leaves(got.history[name]), jax.tree.leaves(want.history[name]), strict=True)
        for a, b in pairs:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6, err_msg=name)
    got_states = jax.tree.leaves([nnx.state(m) for m in got.models])
    want_states = jax.tree.leaves([nnx.state(m) for m in want.models])
    for a, b in zip(got_states, want_states, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
