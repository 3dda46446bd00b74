"""Every measurement runs its own matmuls at the requested precision, "highest" by default.

On CPU a float32 matmul is exact whatever the precision flag says, so the numbers cannot show it
here: the lowered IR does. Each public call runs with `jax_dump_ir_to` set (new input shapes force
a fresh lowering) and every `dot_general` and `convolution` in the dumped modules must carry the
requested precision (HIGHEST by default, DEFAULT or HIGH when asked). On a GPU the platform default
is TF32 and on a TPU one bfloat16 pass: with "highest" the measures stay exact there too.
"""

import contextlib
import pathlib
import re

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

import jaxvg
from jaxvg import measure

from .references import TinyTransformer

_DOT = re.compile(r"stablehlo\.dot_general.*?precision = \[(\w+), (\w+)\]")
_CONV = re.compile(
    r"stablehlo\.convolution.*?precision_config = \[#stablehlo<precision (\w+)>, #stablehlo<precision (\w+)>\]"
)


@contextlib.contextmanager
def dumped_ir(directory: pathlib.Path):
    """Dump the IR of every program lowered inside the block into `directory`."""
    old = jax.config.values["jax_dump_ir_to"]
    jax.config.update("jax_dump_ir_to", str(directory))
    try:
        yield directory
    finally:
        jax.config.update("jax_dump_ir_to", old)


def matmul_precisions(directory: pathlib.Path) -> list[str]:
    """The precision of every dot_general / convolution in the dumped modules (both operands);
    "MISSING" for one without a precision attribute."""
    found = []
    for path in sorted(directory.glob("*.mlir")):
        for line in path.read_text().splitlines():
            if "stablehlo.dot_general" in line or "stablehlo.convolution" in line:
                m = _DOT.search(line) or _CONV.search(line)
                found += list(m.groups()) if m else ["MISSING"]
    return found


def ir_of(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        if "stablehlo.dot_general" in line or "stablehlo.convolution" in line:
            m = _DOT.search(line) or _CONV.search(line)
            found += list(m.groups()) if m else ["MISSING"]
    return found


class ConvBlock(nnx.Module):
    """h -> tanh(conv(h)), (batch, length, channels)."""

    def __init__(self, channels, *, rngs):
        self.conv = nnx.Conv(channels, channels, (3,), padding="SAME", rngs=rngs)

    def __call__(self, h):
        return jnp.tanh(self.conv(h))


class ConvNet(nnx.Module):
    def __init__(self, channels, depth, *, rngs):
        self.blocks = nnx.List([ConvBlock(channels, rngs=rngs) for _ in range(depth)])

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return x


def _sum_squares(out, y):
    del y
    return jnp.sum(out**2)


class TapNet(nnx.Module):
    def __init__(self, *, rngs):
        self.w = nnx.Param(jax.random.normal(rngs.params(), (4, 4)))

    def __call__(self, x):
        return jnp.sum(measure.tap(self, "h", jnp.tanh(x @ self.w[...])) ** 2)


# A fresh batch size per case: a cached compiled program would not be lowered (nor dumped) again.
_BATCHES = iter(range(3, 1000))


def _calls(precision):
    kw = {} if precision is None else {"precision": precision}
    mlp = jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(0))
    conv = ConvNet(2, 3, rngs=nnx.Rngs(0))
    tr = TinyTransformer(rngs=nnx.Rngs(0))

    def xy():
        b = next(_BATCHES)
        return jnp.ones((b, 3)), jnp.zeros((b, 2))

    def b():
        return next(_BATCHES)

    return {
        "gradient_flow": lambda: measure.gradient_flow(mlp, *xy(), **kw),
        "gradient_flow_conv": lambda: measure.gradient_flow(
            conv, jnp.ones((b(), 5, 2)), loss=_sum_squares, **kw
        ),
        "gradient_flow_transformer": lambda: measure.gradient_flow(
            tr,
            jnp.zeros((3, b()), jnp.int32),
            jnp.zeros((3, 4), jnp.int32)[:, :0],
            loss=lambda o, y: jnp.sum(o),
            **kw,
        ),
        "probe_gradient_flow": lambda: measure.Probe(mlp).gradient_flow(*xy(), **kw),
        "jacobian_norms_exact": lambda: measure.jacobian_norms(mlp, xy()[0], **kw),
        "jacobian_norms_hutchinson": lambda: measure.jacobian_norms(
            mlp, xy()[0], method="hutchinson", num_probes=3, **kw
        ),
        "jacobian_norms_conv": lambda: measure.jacobian_norms(conv, jnp.ones((b(), 5, 2)), **kw),
        "jacobian_spectrum": lambda: measure.jacobian_spectrum(
            mlp, jnp.ones((3,)) * b(), layers=(0, 1), **kw
        ),
        "signal_propagation": lambda: measure.signal_propagation(mlp, xy()[0], **kw),
        "signal_propagation_transformer": lambda: measure.signal_propagation(
            tr, jnp.zeros((3, b()), jnp.int32), **kw
        ),
        "tapped_gradients": lambda: measure.tapped_gradients(
            lambda m, x: m(x), TapNet(rngs=nnx.Rngs(0)), jnp.ones((b(), 4)), **kw
        ),  # fmt: skip
    }


@pytest.mark.slow  # over 20 s on 2 cores, cold cache
@pytest.mark.parametrize("precision,want", [(None, "HIGHEST"), ("default", "DEFAULT")])
def test_every_matmul_of_every_measure_carries_the_precision(tmp_path, precision, want):
    for name, call in _calls(precision).items():
        with dumped_ir(tmp_path / name):
            jax.block_until_ready(call())
        found = matmul_precisions(tmp_path / name)
        assert found, f"{name}: no dot_general/convolution lowered (a cached program was reused?)"
        assert set(found) == {want}, (name, sorted(set(found)))


@pytest.mark.parametrize("precision,want", [(None, "HIGHEST"), (jax.lax.Precision.DEFAULT, "DEFAULT")])
def test_from_split_kernels_carry_the_precision(precision, want):
    kw = {} if precision is None else {"precision": precision}
    model = jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(0))
    gd, state = nnx.split(model)
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))
    flow = jax.jit(lambda s, x, y: measure.gradient_flow_from_split(gd, s, x, y, loss="mse", **kw))
    norms = jax.jit(lambda s, x: measure.jacobian_norms_from_split(gd, s, x, **kw))
    signal = jax.jit(lambda s, x: measure.signal_propagation_from_split(gd, s, x, **kw))
    for found in (
        ir_of(flow.lower(state, x, y).as_text()),
        ir_of(norms.lower(state, x).as_text()),
        ir_of(signal.lower(state, x).as_text()),
    ):
        assert found and set(found) == {want}, sorted(set(found))


def test_precision_none_in_from_split_keeps_the_callers_default():
    model = jaxvg.MLP(3, 8, 2, 2, rngs=nnx.Rngs(0))
    gd, state = nnx.split(model)
    x, y = jnp.ones((4, 3)), jnp.zeros((4, 2))

    def kernel(s, x, y):
        with jax.default_matmul_precision("bfloat16"):
            return measure.gradient_flow_from_split(gd, s, x, y, loss="mse", precision=None)

    assert set(ir_of(jax.jit(kernel).lower(state, x, y).as_text())) == {"DEFAULT"}


def test_the_compiled_program_cache_keys_on_precision(tmp_path):
    model = jaxvg.MLP(3, 8, 3, 2, rngs=nnx.Rngs(0))
    x, y = jnp.ones((97, 3)), jnp.zeros((97, 2))
    cases = [("default", "DEFAULT"), ("highest", "HIGHEST"), ("tensorfloat32", "HIGH")]
    for i, (precision, want) in enumerate(cases):
        with dumped_ir(tmp_path / str(i)):
            measure.gradient_flow(model, x, y, precision=precision)
        assert set(matmul_precisions(tmp_path / str(i))) == {want}
    # an alias of a precision already compiled reuses its program: nothing is lowered again
    with dumped_ir(tmp_path / "again"):
        measure.gradient_flow(model, x, y, precision=jax.lax.Precision.HIGH)
    assert matmul_precisions(tmp_path / "again") == []


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: measure.gradient_flow(m, x, jnp.zeros((2, 2)), precision="tf32"),
        lambda m, x: measure.jacobian_norms(m, x, precision="tf32"),
        lambda m, x: measure.jacobian_spectrum(m, x[0], precision="tf32"),
        lambda m, x: measure.Probe(m).gradient_flow(x, jnp.zeros((2, 2)), precision="tf32"),
        lambda m, x: measure.gradient_flow_from_split(*nnx.split(m), x, None, loss="mse", precision="tf32"),
        lambda m, x: measure.signal_propagation(m, x, precision="tf32"),
        lambda m, x: measure.signal_propagation_from_split(*nnx.split(m), x, precision="tf32"),
        lambda m, x: measure.tapped_gradients(
            lambda mm, xx: jnp.sum(xx), TapNet(rngs=nnx.Rngs(0)), x, precision="tf32"
        ),
    ],
)
def test_invalid_precision_names_argument_value_and_choices(call):
    model = jaxvg.MLP(3, 8, 2, 2, rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match=r"`precision` must be one of \[.*'highest'.*\] or a jax.lax.Precision, got 'tf32'"
    ):
        call(model, jnp.ones((2, 3)))


def _chunk_ir_precisions(**config) -> list[str]:
    """The matmul precisions in the lowered IR of one `fit` chunk (2 nets, spirals-like data)."""
    from jaxvg import train

    model = jaxvg.MLP(2, 8, 3, 2, rngs=nnx.Rngs(0))
    graphdef, params, rest = train.stack_models([model, jaxvg.MLP(2, 8, 3, 2, rngs=nnx.Rngs(1))])
    x = jax.random.normal(jax.random.key(0), (16, 2))
    y = (x[:, 0] > 0).astype(jnp.int32)
    cfg = train.TrainConfig(
        loss="cross_entropy",
        optimizer="adam",
        learning_rate=0.1,
        steps=4,
        log_every=2,
        progress=False,
        **config,
    )
    trainer = train.Trainer(graphdef, params, rest, (x, y), cfg)
    state = trainer.init_state(params, rest)
    keys = train.data_keys([0, 1])
    lowered = trainer.program.lower(state, trainer.learning_rate, keys, jnp.int32(0), trainer.arrays)
    return ir_of(lowered.as_text())


def test_the_training_monitor_runs_at_its_precision_and_training_at_the_default():
    plain = _chunk_ir_precisions()  # no monitor: every matmul is the training step's (or the log's)
    assert plain and set(plain) == {"DEFAULT"}, sorted(set(plain))
    n_train = len(plain)
    for precision, want in [
        (None, "HIGHEST"),
        ("tensorfloat32", "HIGH"),
        (jax.lax.Precision.HIGHEST, "HIGHEST"),
    ]:
        kw = {} if precision is None else {"monitor_precision": precision}
        found = _chunk_ir_precisions(monitor_every=2, **kw)
        assert found.count("DEFAULT") == n_train, (precision, found.count("DEFAULT"), n_train)
        assert found.count(want) == len(found) - n_train > 0, (precision, sorted(set(found)))
    everything = _chunk_ir_precisions(monitor_every=2, monitor_precision="default")
    assert set(everything) == {"DEFAULT"} and len(everything) > n_train


def test_train_config_monitor_precision_is_checked_and_canonical():
    from jaxvg import train

    base = dict(loss="mse", optimizer="sgd", learning_rate=0.1, steps=4)
    assert train.TrainConfig(**base).monitor_precision == "highest"
    assert train.TrainConfig(**base, monitor_precision="tensorfloat32").monitor_precision == "high"
    assert (
        train.TrainConfig(**base, monitor_precision=jax.lax.Precision.DEFAULT).monitor_precision == "default"
    )
    with pytest.raises(
        ValueError, match=r"`monitor_precision` must be one of \[.*'highest'.*\] .*got 'tf32'"
    ):
        train.TrainConfig(**base, monitor_precision="tf32")
