"""Vanishing gradients at initialisation: measured, predicted by mean-field theory, and the popular story.

For deep sigmoid, tanh and relu MLPs (depth 50, width 256) this measures how fast the backward signal
shrinks, layer by layer, and sets three numbers side by side, all in decades per layer (log10 gain
of one block, ‖δ_{l-1}‖/‖δ_l‖; negative = the gradient shrinks towards the input):

- measured: `jaxvg.gradient_flow`, exact in log space (no float32 underflow);
- mean field: `jaxvg.theory.gradient_profile`, ½·log10 χ(q_l) per layer with χ(q) = σ_w²·E[φ'(√q z)²],
  following the input's second moment q0 layer by layer (Poole et al. 2016; Schoenholz et al. 2017);
- the "derivative product" of the popular story (docs/claims.md §2): the RMS activation derivative per layer,
  `log10_dphi` = ½·log10 mean φ'(z_l)², summed over the layers; and the textbook bound
  log10 max φ' ("the sigmoid derivative is at most 1/4, so the gradient shrinks by 4 per layer").

Forward panel (figure rows 2-3): `jaxvg.signal_propagation` on a second batch per seed (pairwise
input cosine `c0`) gives log10 q_l = log10 mean h_l² and the mean cosine c_l against
`theory.signal_profile`; the phase (ordered: c_l -> 1, critical, chaotic: c_l -> c* < 1) is read from chi_1.

Reproduces: Schoenholz, Gilmer, Ganguli & Sohl-Dickstein, Deep Information Propagation, ICLR 2017
(arXiv:1611.01232), the gradient depth scale; Glorot & Bengio 2010 (the sigmoid failure).

Run:    python -m experiments.vanishing                      (defaults)
        python -m experiments.vanishing --quick              (2 seeds, batch 32; what the tests run)
        python -m experiments.vanishing --activations tanh gelu --init gaussian --sigma-w2 1.5 --sigma-b2 0.05
        python -m experiments.vanishing --preset full        (depth 200, width 1024, 32 seeds; accelerators)
Writes: results/vanishing/{metrics.json,vanishing.csv,vanishing.png,summary.md,cells/}; prints a table.

Setup: every net has `width` inputs, `depth` blocks of `width` units and a linear head to 10
outputs; the loss is the mean squared error against N(0, 1) targets. Each example is a Gaussian
vector rescaled to ‖x‖²/d0 = q0 exactly (default q0 = 1). Kernel init: `--init auto` (the default)
uses He normal (σ_w² = 2) for relu-like activations and LeCun normal (σ_w² = 1, jaxvg's MLP default)
for the others; zero biases. Seeds: each seed builds its own net (eagerly, `nnx.Rngs(seed)`) and batch;
their states are stacked and `jaxvg.measure.gradient_flow_from_split(..., stacked=True)` measures
them as `jax.vmap` would, in chunks of seeds that fit the memory budget (`--max-memory` bytes, by
default half the device's free memory; `jaxvg.measure.nets.map_nets`): all seeds of one activation
run as one compiled program when they fit, and the results equal separate `gradient_flow` calls to
float32 rounding either way. Before anything is stacked, `jaxvg.scale.check_fits` checks that the
stacked seeds fit the device (a ValueError that says how to shrink, not an out-of-memory crash).
Each activation is one cell, written as it finishes and reused on a rerun.

Expected outcome, measured with the defaults (8 seeds, batch 64, jax 0.10.2, CPU); decades per
layer, mean over seeds (± their std), and decades lost over the 50 layers:

| activation | init (σ_w²)      | measured         | mean field | RMS φ' product | max φ' story | lost: measured / mean field / RMS φ' |
| sigmoid    | lecun_normal (1) | -0.6288 ± 0.0011 | -0.6280    | -0.6283        | -0.6021      | 31.44 / 31.40 / 31.41                |
| tanh       | lecun_normal (1) | -0.0184 ± 0.0007 | -0.0184    | -0.0183        |  0           |  0.92 /  0.92 /  0.91                |
| relu       | he_normal (2)    | +0.0057 ± 0.0043 |  0         | -0.1507        |  0           | -0.28 /  0    /  7.54                |

- sigmoid with LeCun init loses 0.629 decades per layer, 31.4 decades over 50 layers: MORE than
  the "1/4 per layer" story's log10(1/4) = -0.602, because the RMS of σ'(z) over the
  pre-activations (variance q_l ≈ 0.3 after the first block) is below its maximum 1/4. With σ_w² = 1 the weights neither add nor remove anything on average, so for this
  net the derivative product is the whole story, and the mean field gets it to 0.001 decades/layer.
- tanh with LeCun init (σ_w² = 1, σ_b² = 0) loses 0.92 decades, almost all in the first ten
  layers, although the max-φ' story says nothing at all (max tanh' = 1): q_l starts at 1 and
  shrinks towards the fixed point q* = 0 only like 1/l, so tanh'(z)² is below 1 where q_l is
  still large. The mean field follows the measured curve layer by layer.
- relu with He init keeps its gradient: mean field exactly 0 (χ = σ_w²/2 = 1), measured +0.006
  decades/layer (the gradient at the input is 0.28 decades LARGER than at the output, a finite-
  width effect of a few thousandths of a decade per layer that mean field does not describe). Yet
  its RMS derivative is 1/√2, -0.15 decades per layer: the derivative product predicts 7.5 lost
  decades that never happen, because the weights (σ_w² = 2) give them back. The derivative product
  alone predicts nothing; χ = σ_w²·E[φ'²] does.
- `--quick` (2 seeds, batch 32) gives the same numbers to 0.002 decades/layer: sigmoid -0.6299,
  tanh -0.0190, relu +0.0053. Inputs at the fixed point (`--activations tanh --width 1024 --init
  gaussian --sigma-w2 1.5 --sigma-b2 0.05 --q0 none --quick`): measured -0.0144 decades/layer
  against ½·log10 χ₁ = -0.0138.
- Forward panel (`--quick`): sigmoid is ordered, c_l = 1.000 by layer 3 as predicted (within 0.001;
  q within 0.025 decades). relu and tanh are critical: relu's c_l nears 1 as its c map says (0.985 vs
  0.989); tanh's q_l falls like 1/l as predicted, but its c_l random-walks (default run: seeds 0.2-0.6
  at l = 50, mean 0.37 vs 0.44): the c map is neutral at q -> 0, so width-256 fluctuations add up.
  Chaotic (`--activations tanh --init gaussian --sigma-w2 4 --sigma-b2 0.05`): c_l falls from 0.5
  towards c* = 0.146 (0.21 at depth 12).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxvg
from jaxvg import checks, scale, theory
from jaxvg.nn import activations, initializers
from jaxvg.report import experiment, figures, files, tables
from jaxvg.report.experiment import Done, Log, OnCell

NAME = "vanishing"
OUT_FEATURES = 10  # head outputs (MSE against N(0, 1) targets)
RELU_LIKE = ("relu", "leaky_relu")  # `--init auto` gives these He normal init

# sigma_w2 (times 1/fan_in) of each scheme for a square kernel, fan_in == fan_out: what the mean
# field needs. "gaussian" and "orthogonal" take the config's sigma_w2.
_SCHEME_SIGMA_W2 = {
    "lecun_normal": 1.0,
    "he_normal": 2.0,
    "glorot_normal": 1.0,  # 2 / (fan_in + fan_out) * fan_in
    "glorot_uniform": 1.0,  # a² / 3 * fan_in with a² = 6 / (fan_in + fan_out)
    "small_uniform": 1.0 / 3.0,  # U(-1/√fan_in, 1/√fan_in): variance 1 / (3 fan_in)
}


@dataclasses.dataclass(frozen=True)
class Config:
    activations: tuple[str, ...] = ("sigmoid", "tanh", "relu")  # registry names, one net family each
    depth: int = 50  # blocks L (hidden layers)
    width: int = 256  # units per block; the input has `width` features too
    init: str = "auto"  # kernel scheme for every net; auto: he_normal for relu, lecun_normal otherwise
    sigma_w2: float = 1.0  # weight variance x fan_in (only with --init gaussian or orthogonal)
    sigma_b2: float = 0.0  # bias variance (only with --init gaussian or orthogonal)
    q0: float | None = 1.0  # input second moment ||x||^2/d0 per example; none: first pre-activations at q*
    c0: float = 0.5  # cosine similarity between the inputs of the forward panel's batch, in [0, 1)
    batch: int = 64  # examples per net
    seeds: int = 8  # nets (and batches) per activation
    max_memory: int | None = None  # bytes per chunk of seeds being measured; none: half the free memory
    out_dir: str = "results/vanishing"  # where main() writes
    quick: bool = False  # fewer seeds and examples (tests/CI); fields you set yourself are kept

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {"depth": 200, "width": 1024, "seeds": 32, "batch": 256},
    }
    QUICK: ClassVar[dict[str, Any]] = {"seeds": 2, "batch": 32}

    def __post_init__(self):
        experiment.apply_quick(self)
        experiment.check_common(self)
        names = experiment.check_tuple("activations", self.activations, _registry_name)
        if len(set(names)) != len(names):
            raise ValueError(f"`activations` must not repeat a name, got {self.activations!r}.")
        for name in ("depth", "width", "batch", "seeds"):
            checks.positive_int(name, getattr(self, name))
        if self.max_memory is not None:
            checks.positive_int("max_memory", self.max_memory)
        checks.choice("init", self.init, ("auto", *initializers.SCHEMES))
        if self.q0 is not None:
            checks.positive("q0", self.q0)
        checks.in_range("c0", self.c0, 0.0, 1.0)
        for act in names:
            initializers.check_scale(
                init_for(self, act), self.sigma_w2, self.sigma_b2, fan_ins=(self.width,), dtype="float32"
            )
        object.__setattr__(self, "activations", names)


# What a stored activation cell holds; S = setup["seeds"] nets of L = setup["depth"] blocks (NaN = None).
_ROWS = list[list[float | None]]
CELL_SCHEMA = experiment.cell_schema(
    {
        "activation": str,
        "init": str,
        "sigma_w2": float,
        "sigma_b2": float,
        "q0": float,
        "log10_max_dphi": float,
        "predicted_profile": list[float | None],
        "log10_act_grad": _ROWS,
        "log10_gain": _ROWS,
        "log10_dphi": _ROWS,
        "dead_fraction": _ROWS,
        "loss": list[float | None],
        "c0": float,
        "log10_q": _ROWS,
        "cosine": _ROWS,
        "predicted_log10_q": list[float | None],
        "predicted_c": list[float | None],
        "setup": {"depth": int, "seeds": int},
    },
    shapes=lambda cell: {
        "predicted_profile": (cell["setup"]["depth"] + 1,),
        "log10_act_grad": (cell["setup"]["seeds"], cell["setup"]["depth"] + 1),
        "log10_gain": (cell["setup"]["seeds"], cell["setup"]["depth"]),
        "log10_dphi": (cell["setup"]["seeds"], cell["setup"]["depth"]),
        "dead_fraction": (cell["setup"]["seeds"], cell["setup"]["depth"]),
        "loss": (cell["setup"]["seeds"],),
        "log10_q": (cell["setup"]["seeds"], cell["setup"]["depth"] + 1),
        "cosine": (cell["setup"]["seeds"], cell["setup"]["depth"] + 1),
        "predicted_log10_q": (cell["setup"]["depth"] + 1,),
        "predicted_c": (cell["setup"]["depth"] + 1,),
    },
)


def _registry_name(name: str, activation: Any) -> str:
    return checks.choice(name, activation, activations.ACTIVATIONS)  # cells are keyed by the name


def init_for(config: Config, activation: str) -> str:
    """The kernel scheme that `activation`'s nets use: `config.init`, or for "auto" he_normal for
    relu-like activations and lecun_normal otherwise."""
    if config.init != "auto":
        return config.init
    return "he_normal" if activation in RELU_LIKE else "lecun_normal"


def effective_sigma_w2(config: Config, activation: str) -> float:
    """σ_w² (weight variance times fan_in) of `activation`'s square kernels, for the mean field."""
    init = init_for(config, activation)
    return float(config.sigma_w2) if init in initializers.SIGMA_SCHEMES else _SCHEME_SIGMA_W2[init]


def max_derivative(activation: str) -> float:
    """max |φ'| on [-20, 20] (1/4 for sigmoid, 1 for tanh and relu): the textbook bound."""
    z = jnp.linspace(-20.0, 20.0, 400_001)
    return float(jnp.max(jnp.abs(activations.get(activation).dfn(z))))


def _setup(config: Config, activation: str) -> dict[str, Any]:
    """What one activation's cell depends on; a stored cell is reused only if this matches."""
    keys = ("depth", "width", "init", "sigma_w2", "sigma_b2", "q0", "c0", "batch", "seeds")
    setup = {k: getattr(config, k) for k in keys}
    setup["activation"] = activation
    return files.to_jsonable(setup)


def _batch(seed: int, batch: int, width: int, q0: float) -> tuple[jax.Array, jax.Array]:
    """Inputs with ||x||²/d0 = q0 exactly (per example) and N(0, 1) targets for seed `seed`."""
    kx, ky = jax.random.split(jax.random.key(1_000_003 + seed))
    x = jax.random.normal(kx, (batch, width))
    x = x * jnp.sqrt(q0 / jnp.mean(x**2, axis=1, keepdims=True))
    y = jax.random.normal(ky, (batch, OUT_FEATURES))
    return x, y


def _forward_batch(seed: int, batch: int, width: int, q0: float, c0: float) -> jax.Array:
    """The forward panel's inputs: sqrt(c0) g + sqrt(1 - c0) z_a with g shared and z_a per example
    (N(0, 1) vectors), rescaled to ||x||²/d0 = q0 exactly: pairwise cosines c0 ± O(1/sqrt(width))."""
    kg, kz = jax.random.split(jax.random.key(2_000_003 + seed))
    x = math.sqrt(c0) * jax.random.normal(kg, (1, width)) + math.sqrt(1 - c0) * jax.random.normal(
        kz, (batch, width)
    )
    return x * jnp.sqrt(q0 / jnp.mean(x**2, axis=1, keepdims=True))


def _input_q0(config: Config, activation: str, sigma_w2: float, sigma_b2: float) -> float:
    """The input's second moment: `config.q0`, or for None the q0 whose first pre-activations sit at
    the fixed point, sigma_w2 q0 + sigma_b2 = q*, so that every block has chi(q*) = chi_1."""
    if config.q0 is not None:
        return float(config.q0)
    q_star = float(theory.q_star(activation, sigma_w2, sigma_b2))
    q0 = (q_star - sigma_b2) / sigma_w2
    if not (math.isfinite(q0) and q0 > 0):
        raise ValueError(
            f"`q0`=None asks for inputs at the fixed point q*, but q* = {q_star!r} for {activation!r} "
            f"with sigma_w2={sigma_w2}, sigma_b2={sigma_b2} (no input has (q* - sigma_b2)/sigma_w2 > 0); "
            "pass a positive `q0` instead."
        )
    return q0


def _check_seeds_fit(config: Config, one_state: Any) -> None:
    """`jaxvg.scale.check_fits` for the stacked seeds of one activation (their parameters, inputs
    and targets) and, while they are stacked, the per-seed copies: a ValueError before anything is
    allocated when they cannot fit the device (the measurement itself runs in chunks that fit)."""
    per_seed = sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(one_state))
    per_seed += config.batch * (config.width + OUT_FEATURES) * 4
    scale.check_fits(2 * config.seeds * per_seed)


@functools.cache
def _signal_kernel(graphdef: Any) -> Callable[..., jaxvg.SignalFlow]:
    """`jaxvg.measure.signal_propagation_from_split` vmapped over stacked seeds, jitted once (no
    effective rank: its SVDs would cost 40x the rest on CPU, and the panel does not show it)."""
    return jax.jit(
        jax.vmap(
            functools.partial(jaxvg.measure.signal_propagation_from_split, graphdef, rank=False, scan=True)
        )
    )


def _measure_cell(config: Config, activation: str) -> dict[str, Any]:
    """All seeds of one activation: gradient flows, the mean-field profile, the story's numbers."""
    init = init_for(config, activation)
    sigma_w2 = effective_sigma_w2(config, activation)
    sigma_b2 = float(config.sigma_b2) if init in initializers.SIGMA_SCHEMES else 0.0
    q0 = _input_q0(config, activation, sigma_w2, sigma_b2)
    sigmas = {"sigma_w2": config.sigma_w2, "sigma_b2": config.sigma_b2}
    kwargs = sigmas if init in initializers.SIGMA_SCHEMES else {}

    def build(seed):
        return jaxvg.MLP(
            config.width, config.width, config.depth, OUT_FEATURES,
            activation=activation, init=init, rngs=nnx.Rngs(seed), **kwargs,
        )  # fmt: skip

    _check_seeds_fit(config, nnx.state(nnx.eval_shape(lambda: build(0)), nnx.Param))
    states, xs, ys = [], [], []
    for seed in range(config.seeds):
        graphdef, state = nnx.split(build(seed))  # same graphdef for every seed: one compiled program
        x, y = _batch(seed, config.batch, config.width, q0)
        states.append(state)
        xs.append(x)
        ys.append(y)
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)
    del states  # the per-seed copies: only the stacked ones stay on the device
    flow = jaxvg.measure.gradient_flow_from_split(
        graphdef,
        stacked,
        jnp.stack(xs),
        jnp.stack(ys),
        loss="mse",
        stacked=True,
        max_memory=config.max_memory,
        scan=True,  # the 50 blocks scanned: compile 1 s instead of 4-5 s per program, same numbers
    )
    flow = jax.device_get(flow)
    x_fwd = jnp.stack(
        [_forward_batch(s, config.batch, config.width, q0, config.c0) for s in range(config.seeds)]
    )
    sig = jax.device_get(_signal_kernel(graphdef)(stacked, x_fwd))
    c0 = float(np.mean(sig.c[:, 0]))  # the batch's own input cosine, mean over seeds
    q_pred, c_pred, _ = theory.signal_profile(
        activation, sigma_w2, sigma_b2, depth=config.depth, q0=q0, c0=c0
    )
    stack = {
        field: np.asarray(getattr(flow, field), dtype=np.float64)
        for field in ("log10_act_grad", "log10_gain", "log10_dphi", "dead_fraction", "loss")
    }
    profile = np.asarray(theory.gradient_profile(activation, sigma_w2, sigma_b2, depth=config.depth, q0=q0))
    return files.to_jsonable(
        {
            "activation": activation,
            "init": init,
            "sigma_w2": sigma_w2,
            "sigma_b2": sigma_b2,
            "q0": q0,
            "log10_max_dphi": math.log10(max_derivative(activation)),
            "predicted_profile": profile,  # (L+1,) log10||δ_l|| - log10||δ_L||
            **stack,  # per seed: (S, L+1), (S, L), (S, L), (S, L), (S,)
            "c0": c0,
            "log10_q": np.asarray(sig.log10_q, np.float64),  # (S, L+1), forward batch
            "cosine": np.asarray(sig.c, np.float64),  # (S, L+1)
            "predicted_log10_q": np.log10(np.asarray(q_pred, np.float64)),  # (L+1,)
            "predicted_c": np.asarray(c_pred, np.float64),  # (L+1,)
        }
    )


def _nan(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)  # JSON nulls -> NaN


def summarise(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of one activation's cell, in decades per layer (log10 gain; negative =
    the gradient shrinks towards the input) and decades over the whole depth.

    Keys: `measured` (mean over seeds of (log10‖δ_0‖ - log10‖δ_L‖)/L), `seed_std` (its std over
    seeds), `mean_field` (predicted profile[0]/L), `dphi_product` (mean of log10_dphi: the RMS
    activation derivative per layer), `story_max_dphi` (log10 max φ'), `lost_decades` (measured
    log10‖δ_L‖ - log10‖δ_0‖, mean over seeds), `predicted_lost` and `dphi_lost` (the same over the
    depth for the mean field and for the derivative product), `dead_fraction` (mean); forward
    panel: `phase` ("ordered", "critical" or "chaotic": chi_1 at q* below, at or above 1), `c_last`
    and `c_last_mean_field` (cosine of h_L, seed mean and `theory.signal_profile`), `c_max_error`
    and `log10_q_max_error` (largest |measured - predicted| over l = 0..L of the seed means).
    """
    act = _nan(cell["log10_act_grad"])  # (S, L+1)
    depth = act.shape[1] - 1
    per_seed = (act[:, 0] - act[:, -1]) / depth
    profile = _nan(cell["predicted_profile"])
    dphi = _nan(cell["log10_dphi"])
    chi = float(theory.chi_1(cell["activation"], cell["sigma_w2"], cell["sigma_b2"]))
    c, log10_q = _nan(cell["cosine"]).mean(axis=0), _nan(cell["log10_q"]).mean(axis=0)
    return {
        "activation": cell["activation"],
        "init": cell["init"],
        "sigma_w2": cell["sigma_w2"],
        "q0": cell["q0"],
        "measured": float(per_seed.mean()),
        "seed_std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else math.nan,
        "mean_field": float(profile[0] / depth),
        "dphi_product": float(np.nanmean(dphi)),
        "story_max_dphi": float(cell["log10_max_dphi"]),
        "lost_decades": float(-per_seed.mean() * depth),
        "predicted_lost": float(-profile[0]) + 0.0,  # + 0.0: no "-0.0000" in tables
        "dphi_lost": float(-np.nansum(dphi, axis=1).mean()),
        "dead_fraction": float(np.nanmean(_nan(cell["dead_fraction"]))),
        "phase": "ordered" if chi < 1 - 1e-6 else "chaotic" if chi > 1 + 1e-6 else "critical",
        "c_last": float(c[-1]),
        "c_last_mean_field": float(cell["predicted_c"][-1]),
        "c_max_error": float(np.max(np.abs(c - _nan(cell["predicted_c"])))),
        "log10_q_max_error": float(np.max(np.abs(log10_q - _nan(cell["predicted_log10_q"])))),
    }


def profiles(cell: Mapping[str, Any]) -> dict[str, Any]:
    """The curves of one activation, each log10‖δ_l‖ - log10‖δ_L‖ for l = 0..L (decades; 0 at
    l = L, negative where the gradient is smaller than at the output).

    Keys: `measured_seeds` (S, L+1); `measured` and `measured_std` (L+1,), mean and std over seeds;
    `mean_field` (L+1,), `theory.gradient_profile`; `dphi_product` (L+1,), the summed log10_dphi
    of the blocks above l (the product of RMS activation derivatives), seed mean; `story` (L+1,),
    (L - l)·log10 max φ'. Forward panel, l = 0..L: `log10_q` and `c` (seed means of the forward
    batch's log10 mean h_l² and mean pairwise cosine), `c_seeds` (S, L+1), `log10_q_mean_field`
    and `c_mean_field` (`theory.signal_profile` from the batch's q0 and c0).
    """
    act = _nan(cell["log10_act_grad"])  # (S, L+1)
    depth = act.shape[1] - 1
    measured = act - act[:, -1:]
    dphi = _nan(cell["log10_dphi"])  # (S, L)
    above = np.concatenate([np.cumsum(dphi[:, ::-1], axis=1)[:, ::-1], np.zeros((len(dphi), 1))], axis=1)
    return {
        "measured_seeds": measured,
        "measured": measured.mean(axis=0),
        "measured_std": measured.std(axis=0),
        "mean_field": _nan(cell["predicted_profile"]),
        "dphi_product": above.mean(axis=0),
        "story": (depth - np.arange(depth + 1)) * float(cell["log10_max_dphi"]),
        "log10_q": _nan(cell["log10_q"]).mean(axis=0),
        "log10_q_mean_field": _nan(cell["predicted_log10_q"]),
        "c_seeds": _nan(cell["cosine"]),
        "c": _nan(cell["cosine"]).mean(axis=0),
        "c_mean_field": _nan(cell["predicted_c"]),
    }


def layer_rows(cell: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One CSV row per activation index l = 0..L: the `profiles` curves, and the block's own
    log10 gain and log10_dphi (seed means; NaN at l = 0, which no block outputs)."""
    curves = profiles(cell)
    gain = _nan(cell["log10_gain"]).mean(axis=0)
    dphi = _nan(cell["log10_dphi"]).mean(axis=0)
    rows = []
    for l in range(len(curves["measured"])):  # noqa: E741 - the layer index of the maths
        row: dict[str, Any] = {"activation": cell["activation"], "layer": l}
        for name in ("measured", "measured_std", "mean_field", "dphi_product", "story", "log10_q",
                     "log10_q_mean_field", "c", "c_mean_field"):  # fmt: skip
            row[name] = float(curves[name][l])
        row["log10_gain"] = float(gain[l - 1]) if l > 0 else math.nan
        row["log10_dphi"] = float(dphi[l - 1]) if l > 0 else math.nan
        rows.append(row)
    return rows


def run(config: Config, *, on_cell: OnCell = None, done: Done = None, log: Log = None) -> dict[str, Any]:
    """Measure and predict the gradient decay of every activation's nets, with no file I/O.

    Args:
      config: the experiment `Config`.
      on_cell: called as `on_cell(activation, cell)` after each activation's nets are measured;
        `cell` is JSON-ready (per-seed lists; see `_measure_cell`).
      done: {activation: cell} already computed (as `jaxvg.report.cell_store.finished_cells` returns); a
        cell is reused when its stored setup matches this config, else recomputed.
      log: optional progress printer (main passes one that writes to stderr).

    Returns:
      Dict with `cells` {activation: cell}, `summary` {activation: `summarise(cell)`}, `profiles`
      {activation: `profiles(cell)`} (what `jaxvg.report.figures.vanishing` draws), `rows` (the
      table rows, one per activation), `layer_rows` (one per activation and layer, for the CSV),
      `computed` (activations computed in this call) and `seconds`.

    Raises:
      ValueError: `q0` is None and an activation's fixed point q* is 0 or infinite.
    """
    experiment.check_config(config, Config)
    start = time.perf_counter()
    store = experiment.Cells(done, on_cell, log, schema=CELL_SCHEMA)
    for activation in config.activations:
        store.get(
            activation, _setup(config, activation), functools.partial(_measure_cell, config, activation)
        )
    cells = store.cells
    summary = {a: summarise(c) for a, c in cells.items()}
    return {
        "cells": cells,
        "summary": summary,
        "profiles": {a: profiles(c) for a, c in cells.items()},
        "rows": list(summary.values()),
        "layer_rows": [row for c in cells.values() for row in layer_rows(c)],
        "computed": store.computed,
        "seconds": time.perf_counter() - start,
    }


def report(config: Config, res: dict[str, Any]) -> experiment.Outputs:
    """What main writes: metrics.json, vanishing.csv (one row per activation and layer),
    summary.md and vanishing.png."""
    return experiment.Outputs(
        results={k: res[k] for k in ("summary", "cells", "computed", "seconds")},
        summary=summary_text(config, res),
        csv={f"{NAME}.csv": res["layer_rows"]},
        figure=lambda: figures.vanishing(res),
    )


TABLE_COLUMNS = (
    "activation", "init", "sigma_w2", "measured", "seed_std", "mean_field", "dphi_product",
    "story_max_dphi", "lost_decades", "predicted_lost", "dphi_lost", "phase", "c_last", "c_last_mean_field",
)  # fmt: skip


def summary_text(config: Config, res: Mapping[str, Any]) -> str:
    """summary.md: the setup, the table and one line per activation."""
    table = tables.format_table(res["rows"], TABLE_COLUMNS, floatfmt=".4f")
    lines = [
        f"# Vanishing gradients at init: depth {config.depth}, width {config.width}, {config.seeds} seeds",
        "",
        f"Input ||x||^2/d0 = q0 per example ({'set so that the first pre-activations sit at the fixed point q*' if config.q0 is None else config.q0}); "
        f"batch {config.batch}; MSE loss against N(0, 1) targets. Decades per layer = log10 gain of one "
        "block (negative: the gradient shrinks towards the input). `measured`: gradient_flow, mean over "
        "seeds (`seed_std` its spread); `mean_field`: theory.gradient_profile; `dphi_product`: the RMS "
        "activation derivative per layer (the derivative product of the popular story); "
        "`story_max_dphi`: log10 max phi' (sigmoid: log10(1/4) = -0.602). `*_lost`: decades over the "
        "whole depth.",
        "",
        table,
        "",
    ]
    for s in res["rows"]:
        lines.append(
            f"- {s['activation']} ({s['init']}, sigma_w2 = {s['sigma_w2']:g}): measured {s['measured']:+.4f} "
            f"decades/layer vs mean field {s['mean_field']:+.4f} (difference {s['measured'] - s['mean_field']:+.4f}); "
            f"the derivative product says {s['dphi_product']:+.4f} and the max-phi' story {s['story_max_dphi']:+.4f}. "
            f"Over {config.depth} layers: {s['lost_decades']:.2f} decades lost (mean field {s['predicted_lost']:.2f}, "
            f"derivative product {s['dphi_lost']:.2f})."
        )
    lines += ["", f"Forward signal (inputs with pairwise cosine {config.c0:g}; `theory.signal_profile`):", ""]
    for s in res["rows"]:
        lines.append(
            f"- {s['activation']}: {s['phase']} (chi_1 at q*); cosine of h_L {s['c_last']:.4f} vs mean field "
            f"{s['c_last_mean_field']:.4f}; largest deviation over the layers: c {s['c_max_error']:.4f}, "
            f"log10 q {s['log10_q_max_error']:.4f} decades."
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run, and write results/vanishing/ (metrics.json, CSV, PNG, summary.md)."""
    return experiment.main(Config, run, report, argv, schema=CELL_SCHEMA)


if __name__ == "__main__":
    main()
