"""Vanishing and exploding gradients through time: measured, predicted and cured in recurrent nets.

Four parts, one cell per (part, net, length[, clipping]), each written as it finishes:

1. The gradient through time at initialisation (T = `init_length`, hidden `init_hidden`, adding-problem
   inputs, MSE on the last step): log10 ‖∂L/∂h_t‖ for t = 0..T measured exactly in log space
   (`jaxvg.measure.time_flow`), next to the theory (`jaxvg.theory.recurrent.model_profile`: mean field
   for the tanh RNNs, the exact linear profile from λ for the LRU, Pascanu's bound for the IRNN; none
   for LSTM and GRU) and to the plain float32 gradient of autodiff, whose underflow step (the first lag
   at which it is exactly 0) is marked.
2. The adding problem (Hochreiter & Schmidhuber 1997, exp. 4; one marker in each half as in Arjovsky
   et al. 2016): T in `lengths`, batch 50, Adam, `seeds` nets per cell in one vmapped program
   (`jaxvg.fit(seeds=...)`), gradient clipping at 1.0 (and off at `clip_off_lengths`). A run succeeds
   when its test MSE is below 0.01 (always answering 1 gives 1/6). At the longest T the gradient
   profile and Pascanu's lag contributions of seed 0 are measured before and after training.
3. Pascanu et al. 2013's temporal-order task at `order_lengths` (success: under 1% test errors).
4. The verdict: which cure (gating, orthogonal or identity init, clipping, a diagonal linear
   recurrence) fixes vanishing and which only stops exploding; figures of success against T, the
   gradient against t at init and after training, and the lag contributions.

Nets (`jaxvg.nn.RNN`): tanh RNN with Gaussian W ~ N(0, 1/N) ("tanh_gaussian", the baseline) and with
orthogonal W ("tanh_orthogonal"); IRNN (relu, W = I; Le et al. 2015); LSTM (orthogonal gate blocks,
forget bias 1); GRU; LRU (Orvieto et al. 2023, ring |λ| in [0.9, 0.999], a relu step embed).

Run:    python -m experiments.through_time              (the CPU default; see the budget below)
        python -m experiments.through_time --quick      (T = 20 and 50, 2 seeds: 2 min on 2 cores)
        python -m experiments.through_time --preset full  (the literature's sizes: hidden 128, T up to 1000,
                                                            20k steps; accelerators)
Writes: results/through_time/{metrics.json, through_time.csv, through_time.png, summary.md, cells/}.

Budget (the CPU default is NOT the full grid): on 2 shared CPU cores one Adam step of 8 LSTMs
(hidden 128, batch 50, T = 100, vmapped) took 0.86 s, so the full grid (T up to 500, hidden 128, 8
seeds, clipping on and off, 6 nets) would need about 32 s per step: some 60 steps in 30 minutes. The
default therefore trains hidden 32 (not 128) with 4 seeds (not 8) for 1000 Adam steps (learning rate
3e-3; the literature trains 10^4 to 10^5 steps) at T in {50, 100, 200, 500}, with clipping off only
at T = 100; part 1 runs at hidden 128 (4 seeds). `--preset full` runs the full sizes
(hidden 128, 8 seeds, clipping on and off at every T, 20k steps) and adds T = 1000.

Expected outcome, from the default run (4 seeds; numbers are decades per step of log10 ‖∂L/∂h_t‖):

- At init (T = 1000, hidden 128): the tanh RNN loses 0.085 ± 0.011 (Gaussian W) and 0.085 ± 0.015
  (orthogonal W: no better at init, tanh' < 1 does the shrinking) against the mean field's 0.094,
  i.e. 79 decades over 1000 steps; the plain float32 gradient of autodiff reads exactly 0 from lag 468
  on (456 orthogonal, 525 GRU), where time_flow still measures it. GRU 0.102, LSTM 0.033, IRNN 0.0002,
  LRU 0.0017 (exact linear theory from λ: 0.0015). The mean field is a large-width statement: at
  hidden 1024 with 64 Gaussian inputs it agrees to 0.2-0.5% (what the tests measure); at hidden
  128 with the adding problem's 2 inputs the seeds spread by ±0.011.
- Adding problem (1000 steps; success = test MSE < 0.01, fraction of 4 seeds at T = 50/100/200/500):
  tanh Gaussian 0/0/0/0 and orthogonal 0/0/0/0 (at the 1/6 baseline from T = 100); IRNN
  .25/.5/0/0, with 2 and 3 of 4 runs diverging at T = 200 and 500 despite clipping (Adam); LSTM
  1/.75/.25/0; GRU 1/1/1/1; LRU 1/1/1/0 (median MSE 0.066 at T = 500).
- Clipping off at T = 100: IRNN 0.5 -> 0, LSTM 0.75 -> 0.5, GRU and LRU unchanged (1), the tanh
  nets stay at 0 with or without: clipping cannot enlarge a vanishing gradient. No run diverged at
  T = 100 either way.
- Temporal order at T = 50 (fraction under 1% errors): IRNN, GRU, LRU 1; LSTM 0.5; orthogonal tanh
  0.25 and Gaussian tanh 0 (median errors 32% and 75%).
- After training at T = 500 (seed 0): the GRU's gradient profile is flat (0.2 decades over 500 steps,
  68 at init) and the LRU's stays so (1.1; 1.6 at init); the LSTM loses 32 decades (27 at init), the
  tanh nets 53 and 67 (47 and 52); the IRNN (at its last finite parameters: it diverged) has a
  gradient 19 decades LARGER at t = 0 than at t = T: it explodes.

How firm the success counts are: the run is deterministic (the same commit, jax and CPU give the
same bits; a rerun of the IRNN cells matched to the last digit, with XLA on one thread too), but
1000 Adam steps amplify float32 rounding, so a change that only rounds differently moves a cell by
a seed or two: the same IRNN cells compiled at LLVM -O0 (as the test suite compiles) solve 2 and 2
of 4 seeds at T = 50 and 100 instead of 1 and 2, and an earlier run on the same library code (its
XLA settings not recorded; metrics.json records XLA_FLAGS now) had IRNN .75/.75/0/0 and LRU
1/1/.75/0. What holds in every run recorded: the tanh nets never solve T >= 100, the GRU solves
every T, clipping never rescues a tanh net, and the IRNN diverges at T >= 200.

Where the runs agree with the literature: the tanh RNN does not learn long lags (Bengio et al. 1994;
Le et al. 2015 see it stuck at the baseline from T = 150, here from T = 100 within 1000 steps);
gating and a diagonal linear recurrence fix the vanishing gradient; the IRNN needs clipping and is
fragile (Le et al.: sensitive to the learning rate); clipping alone does not fix vanishing (Pascanu et
al. 2013 add a regulariser for that). Where not: the LSTM fails T >= 200 here, while Hochreiter &
Schmidhuber solve T = 500 and the IndRNN reproduction T = 500 (fail 1000), and the IRNN fails T = 200
against Le et al.'s T = 400: both with 10^4-10^5 steps and 100+ units against 1000 steps at hidden 32
here (the default's budget, not the method, is the likely cause; `--preset full` is the test). The
GRU beats the LSTM at every T here (forget bias 1, orthogonal gates); the LRU, built for deep stacks
and long training (Orvieto et al.), is short of T = 500 in 1000 steps. Cost of the default run on
an otherwise idle 2-core CPU (jax 0.10.2, 2026-12-02): 11.7 min wall (12.6 min of CPU time); on the
same CPU shared with three other jobs (load average 7-9) an earlier run took 49 min.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import jaxvg
from jaxvg import checks, report
from jaxvg.measure import lognorm
from jaxvg.nn import losses
from jaxvg.nn.rnn import RNN
from jaxvg.report import experiment
from jaxvg.theory import recurrent
from jaxvg.train import tasks

NAME = "through_time"
_NO_CELLS: Mapping[str, Any] = types.MappingProxyType({})

NETS: dict[str, dict[str, Any]] = {
    "tanh_gaussian": {"cell": "tanh", "init": "gaussian"},
    "tanh_orthogonal": {"cell": "tanh", "init": "orthogonal"},
    "irnn": {"cell": "relu", "init": "identity"},
    "lstm": {"cell": "lstm"},
    "gru": {"cell": "gru"},
    "lru": {"cell": "lru"},
}
CURES = {
    "tanh_gaussian": "none (baseline)",
    "tanh_orthogonal": "orthogonal init",
    "irnn": "identity init (relu)",
    "lstm": "gating (forget gate, bias 1)",
    "gru": "gating (update gate)",
    "lru": "diagonal linear recurrence",
}
LITERATURE = {
    "tanh_gaussian": "Bengio et al. 1994; Hochreiter & Schmidhuber 1997: BPTT tanh RNNs fail at lags of "
    "tens of steps; Le et al. 2015: the tanh RNN stays at the adding baseline from T = 150 on.",
    "tanh_orthogonal": "Arjovsky et al. 2016 / Henaff et al. 2016: orthogonal recurrence keeps the linear "
    "part norm-preserving, but tanh' < 1 still shrinks the gradient away from the origin.",
    "irnn": "Le et al. 2015: the IRNN solves the adding problem up to T = 400, on a par with the LSTM, but "
    "is sensitive to the learning rate (gradient clipping used).",
    "lstm": "Hochreiter & Schmidhuber 1997: solves the adding problem at T = 100 and 500; the IndRNN paper "
    "(Li et al. 2018) reproduces T = 500 solved and T = 1000 failed within its budget.",
    "gru": "Chung et al. 2014; Jozefowicz et al. 2015: on a par with the LSTM on long-memory tasks.",
    "lru": "Orvieto et al. 2023: a diagonal linear recurrence with |λ| near 1 (ring init, γ normalisation) "
    "learns dependencies over thousands of steps (Long Range Arena).",
}


@dataclasses.dataclass(frozen=True)
class Config:
    nets: tuple[str, ...] = tuple(NETS)  # which nets (keys of NETS)
    init_length: int = 1000  # T of part 1 (gradient at init)
    init_hidden: int = 128  # hidden units in part 1
    init_batch: int = 16  # sequences in part 1 (and in the before/after measurements)
    init_seeds: int = 4  # nets per cell in part 1 (the rate's spread over seeds is reported)
    lengths: tuple[int, ...] = (50, 100, 200, 500)  # adding-problem lengths T
    clip_off_lengths: tuple[int, ...] = (100,)  # lengths also trained without clipping
    order_lengths: tuple[int, ...] = (50,)  # temporal-order lengths
    hidden: int = 32  # hidden units of the trained nets (128 with --preset full)
    batch: int = 50  # sequences per step
    steps: int = 1000  # Adam steps on the adding problem
    order_steps: int = 1000  # Adam steps on the temporal-order task
    learning_rate: float = 3e-3  # Adam
    clip_norm: float = 1.0  # global-norm clipping when on
    seeds: int = 4  # nets per cell, vmapped in one program
    n_train: int = 5000  # training sequences per task
    n_test: int = 1000  # fresh test sequences per task
    success_mse: float = 0.01  # adding problem: solved below this test MSE
    success_error: float = 0.01  # temporal order: solved below this test error rate
    out_dir: str = "results/through_time"  # where main() writes
    quick: bool = False  # T = 20 and 50, 2 seeds, 300 steps (tests/CI); fields you set yourself are kept

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "full": {
            "init_hidden": 128,
            "lengths": (50, 100, 200, 500, 1000),
            "clip_off_lengths": (50, 100, 200, 500, 1000),
            "order_lengths": (50, 100, 200),
            "hidden": 128,
            "steps": 20000,
            "order_steps": 20000,
            "learning_rate": 1e-3,
            "seeds": 8,
            "n_train": 100000,
        }
    }

    QUICK: ClassVar[dict[str, Any]] = {
        "init_length": 200,
        "init_hidden": 32,
        "init_seeds": 2,
        "lengths": (20, 50),
        "clip_off_lengths": (50,),
        "order_lengths": (20,),
        "seeds": 2,
        "steps": 300,
        "order_steps": 300,
        "n_train": 1000,
        "n_test": 200,
    }

    def __post_init__(self):
        experiment.apply_quick(self)
        experiment.check_common(self)
        for name in ("nets", "lengths", "clip_off_lengths", "order_lengths"):
            value = getattr(self, name)
            if isinstance(value, str) or (name != "clip_off_lengths" and not value):
                raise ValueError(f"`{name}` must be a non-empty tuple, got {value!r}.")
            object.__setattr__(self, name, tuple(value))
        for net in self.nets:
            checks.choice("nets", net, NETS)
        for T in self.lengths:
            if checks.positive_int("lengths", T) < 2:
                raise ValueError(f"`lengths` must hold ints >= 2, got {self.lengths!r}.")
        for T in self.clip_off_lengths:
            if T not in self.lengths:
                raise ValueError(
                    f"`clip_off_lengths` must be a subset of `lengths` {self.lengths}, got {T!r}."
                )
        for T in self.order_lengths:
            if checks.positive_int("order_lengths", T) < 10:
                raise ValueError(f"`order_lengths` must hold ints >= 10, got {self.order_lengths!r}.")
        for name in ("init_length", "init_hidden", "init_batch", "init_seeds", "hidden", "batch", "steps", "order_steps",
                     "seeds", "n_train", "n_test"):  # fmt: skip
            checks.positive_int(name, getattr(self, name))
        if self.batch > self.n_train:
            raise ValueError(f"`batch` must be <= `n_train` = {self.n_train}, got {self.batch!r}.")
        checks.positive("learning_rate", self.learning_rate)
        checks.positive("clip_norm", self.clip_norm)
        checks.positive("success_mse", self.success_mse)
        checks.in_range("success_error", self.success_error, 0.0, 1.0)


def factory(net: str, in_features: int, hidden: int, out_features: int) -> Callable[[nnx.Rngs], RNN]:
    """`rngs -> RNN` for one of `NETS` (what `jaxvg.fit(seeds=...)` calls)."""
    kw = NETS[net]
    return lambda rngs: RNN(in_features, hidden, out_features, rngs=rngs, **kw)


# --------------------------------------------------------------------------------------------------
# Part 1: the gradient through time at init
# --------------------------------------------------------------------------------------------------


def plain_state_grads(model: RNN, xs: jax.Array, y: jax.Array) -> np.ndarray:
    """log10 ‖∂L/∂h_t‖ (t = 0..T) of the plain float32 gradient that autodiff returns (zero
    perturbations added to every h_t), its norm taken exactly; -inf where autodiff gave exactly 0."""
    graphdef, state = nnx.split(model)

    @jax.jit
    def grads(state, xs, y, eps):
        m = nnx.merge(graphdef, state, copy=True)
        cell_gd, cell_state = nnx.split(m.cell)

        def step(s, inp):
            x, e = inp
            s = nnx.merge(cell_gd, cell_state)(s, x)
            s = (s[0] + e, *s[1:]) if isinstance(s, tuple) else s + e
            return s, None

        def loss(eps):
            xe = xs if m.embed is None else m.embed(xs)
            s0 = m.initial_state(xs.shape[0])
            s0 = (s0[0] + eps[0], *s0[1:]) if isinstance(s0, tuple) else s0 + eps[0]
            s, _ = jax.lax.scan(step, s0, (jnp.swapaxes(xe, 0, 1), eps[1:]))
            return losses.get("mse")(m.head(m.reported(s)), y)

        g = jax.grad(loss)(eps)
        return lognorm.log10_norm(g, axes_keep=1)

    width = model.state_width
    eps = jnp.zeros((xs.shape[1] + 1, xs.shape[0], width), xs.dtype)
    return np.asarray(grads(state, xs, y, eps), np.float64)


def _underflow(exact: np.ndarray, plain: np.ndarray) -> dict[str, Any]:
    """The first lag T - t at which the plain gradient is exactly 0, and at which it is more than
    0.01 decades off the exact one (None: never)."""
    T = len(exact) - 1
    lags = T - np.arange(T + 1)
    zero = lags[np.isneginf(plain)]
    off = lags[~(np.abs(plain - exact) <= 0.01)]
    return {
        "underflow_lag": int(zero.min()) if zero.size else None,
        "inexact_lag": int(off.min()) if off.size else None,
    }


def _init_cell(config: Config, net: str) -> dict[str, Any]:
    T = config.init_length
    task = tasks.adding(T, n_train=1, n_test=config.init_batch, seed=0)
    xs, y = jnp.asarray(task.x_test), jnp.asarray(task.y_test)
    exact = []
    for seed in range(config.init_seeds):  # one compiled program: same structure and shapes
        model = factory(net, 2, config.init_hidden, 1)(nnx.Rngs(seed))
        flow = jaxvg.time_flow(model, xs, y)
        exact.append(np.asarray(flow.log10_state_grad, np.float64))
        if seed == 0:
            first, lag, cell_grad = model, flow.log10_lag_contrib, flow.log10_cell_grad
    exact = np.stack(exact)
    plain = plain_state_grads(first, xs, y)
    theory, source = recurrent.model_profile(first, xs)
    try:
        eta = recurrent.pascanu_condition(first).log10_eta
    except ValueError:  # gated cells: no single recurrent matrix
        eta = math.nan
    return report.to_jsonable(
        {
            "net": net,
            "T": T,
            "exact_seeds": exact,  # (seeds, T+1)
            "exact": exact[0],
            "plain": plain,
            "theory": theory,
            "theory_source": source,
            "log10_eta": eta,
            "lag_contrib": np.asarray(lag, np.float64),
            "cell_grad": np.asarray(cell_grad, np.float64),
            **_underflow(exact[0], plain),
        }
    )


# --------------------------------------------------------------------------------------------------
# Parts 2 and 3: training
# --------------------------------------------------------------------------------------------------


def _fit(config: Config, net: str, task: tasks.SequenceTask, out: int, steps: int, clip: bool):
    return jaxvg.fit(
        factory(net, task.in_features, config.hidden, out),
        task,
        optimizer="adam",
        learning_rate=config.learning_rate,
        steps=steps,
        batch_size=config.batch,
        clip_norm=config.clip_norm if clip else None,
        log_every=steps,
        seeds=list(range(config.seeds)),
        on_nonfinite="record",
        progress=False,
    )


def _profiles(model: RNN, xs: jax.Array, y: jax.Array) -> dict[str, np.ndarray]:
    flow = jaxvg.time_flow(model, xs, y)
    return {
        "state_grad": np.asarray(flow.log10_state_grad, np.float64),
        "lag_contrib": np.asarray(flow.log10_lag_contrib, np.float64),
    }


def _adding_cell(config: Config, net: str, T: int, clip: bool) -> dict[str, Any]:
    task = tasks.adding(T, n_train=config.n_train, n_test=config.n_test, seed=T)
    t0 = time.perf_counter()
    result = _fit(config, net, task, 1, config.steps, clip)
    seconds = time.perf_counter() - t0
    mse = np.asarray(result.history["test/loss"][:, -1], np.float64)
    diverged = np.asarray(result.history["diverged"], bool)
    mse = np.where(diverged, np.nan, mse)
    cell = {
        "net": net,
        "T": T,
        "clip": clip,
        "test_mse": mse,
        "diverged": diverged,
        "success": float(np.mean(mse < config.success_mse)),
        "seconds": seconds,
    }
    if clip and T == max(config.lengths):  # the gradient before and after training, seed 0
        xs = jnp.asarray(task.x_test[: config.init_batch])
        y = jnp.asarray(task.y_test[: config.init_batch])
        before = _profiles(factory(net, 2, config.hidden, 1)(nnx.Rngs(0)), xs, y)
        after = _profiles(result.models[0], xs, y)
        cell.update({f"{k}_init": v for k, v in before.items()})
        cell.update({f"{k}_trained": v for k, v in after.items()})
    return report.to_jsonable(cell)


def _order_cell(config: Config, net: str, T: int) -> dict[str, Any]:
    task = tasks.temporal_order(T, n_train=config.n_train, n_test=config.n_test, seed=T)
    t0 = time.perf_counter()
    result = _fit(config, net, task, tasks.TEMPORAL_ORDER_CLASSES, config.order_steps, True)
    error = 1.0 - np.asarray(result.history["test/accuracy"][:, -1], np.float64)
    diverged = np.asarray(result.history["diverged"], bool)
    error = np.where(diverged, np.nan, error)
    return report.to_jsonable(
        {
            "net": net,
            "T": T,
            "test_error": error,
            "diverged": diverged,
            "success": float(np.mean(error < config.success_error)),
            "seconds": time.perf_counter() - t0,
        }
    )


# --------------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------------


def cell_keys(config: Config) -> list[tuple[str, Callable[[], dict[str, Any]]]]:
    """Every cell of the config, in run order: (key, thunk that computes it)."""
    keys = [(f"init/{net}", lambda net=net: _init_cell(config, net)) for net in config.nets]
    for T in config.lengths:
        for clip in (True, False) if T in config.clip_off_lengths else (True,):
            for net in config.nets:
                keys.append(
                    (f"adding/T={T:05d}/clip={'on' if clip else 'off'}/{net}",
                     lambda net=net, T=T, clip=clip: _adding_cell(config, net, T, clip))
                )  # fmt: skip
    for T in config.order_lengths:
        for net in config.nets:
            keys.append((f"order/T={T:05d}/{net}", lambda net=net, T=T: _order_cell(config, net, T)))
    return keys


def _arr(values: Any) -> np.ndarray:
    return np.asarray([math.nan if v is None else v for v in values] if isinstance(values, list) else values,
                      dtype=np.float64)  # fmt: skip


def init_rows(cells: Mapping[str, Any], config: Config) -> list[dict[str, Any]]:
    """Part 1, one row per net: decades per step measured (whole run; mean and std over seeds) and
    predicted, total decades lost (seed 0), Pascanu's log10 η, and where seed 0's plain float32
    gradient underflows."""
    rows = []
    for net in config.nets:
        c = cells[f"init/{net}"]
        exact, theory = _arr(c["exact"]), _arr(c["theory"])
        seeds = np.asarray([_arr(e) for e in c["exact_seeds"]])
        T = len(exact) - 1
        rates = (seeds[:, 0] - seeds[:, -1]) / T
        rows.append(
            {
                "net": net,
                "measured": float(rates.mean()),
                "seed_std": float(rates.std(ddof=1)) if len(rates) > 1 else math.nan,
                "theory": float((theory[0] - theory[-1]) / T) if np.isfinite(theory[0]) else math.nan,
                "theory_source": c["theory_source"],
                "pascanu_log10_eta": _arr([c["log10_eta"]])[0],
                "decades_lost": float(exact[-1] - exact[0]),
                "float32_zero_at_lag": c["underflow_lag"],
                "float32_off_at_lag": c["inexact_lag"],
            }
        )
    return rows


def _task_rows(cells: Mapping[str, Any], task: str, metric: str, *, clip: bool) -> list[dict[str, Any]]:
    """One row per cell of `task` ("adding", "order"): net, T, (clipping,) success fraction, the
    median of `metric` over the seeds, diverged seeds (and, with `clip`, seconds)."""
    rows = []
    for key, c in cells.items():
        if not key.startswith(task + "/"):
            continue
        values = _arr(c[metric])
        row = {"net": c["net"], "T": c["T"]}
        if clip:
            row["clip"] = "on" if c["clip"] else "off"
        row["success"] = c["success"]
        row[f"median_{metric}"] = float(np.nanmedian(values)) if np.isfinite(values).any() else math.nan
        row["diverged"] = int(np.sum(c["diverged"]))
        if clip:
            row["seconds"] = c["seconds"]
        rows.append(row)
    return rows


def adding_rows(cells: Mapping[str, Any], config: Config) -> list[dict[str, Any]]:
    """Part 2, one row per (net, T, clipping): success fraction, median test MSE, diverged seeds."""
    return _task_rows(cells, "adding", "test_mse", clip=True)


def order_rows(cells: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Part 3, one row per (net, T): success fraction, median test error, diverged seeds."""
    return _task_rows(cells, "order", "test_error", clip=False)


def verdict_rows(cells: Mapping[str, Any], config: Config) -> list[dict[str, Any]]:
    """Part 4: one row per cure. `init_decades_per_step` (part 1), `longest_solved` (the largest T whose
    adding runs succeed for at least half the seeds, clipping on), `clip_off_diverged` and
    `clip_off_success` at the clip-off lengths, and the verdict."""
    init = {r["net"]: r for r in init_rows(cells, config)}
    adding = adding_rows(cells, config)
    rows = []
    for net in config.nets:
        on = {r["T"]: r for r in adding if r["net"] == net and r["clip"] == "on"}
        off = [r for r in adding if r["net"] == net and r["clip"] == "off"]
        solved = [T for T, r in on.items() if r["success"] >= 0.5]
        longest = max(solved) if solved else None
        base = [r for r in adding if r["net"] == "tanh_gaussian" and r["clip"] == "on"]
        base_solved = max([r["T"] for r in base if r["success"] >= 0.5], default=None)
        div_off = sum(r["diverged"] for r in off)
        succ_on_at_off = np.mean([on[r["T"]]["success"] for r in off]) if off else math.nan
        succ_off = np.mean([r["success"] for r in off]) if off else math.nan
        if net == "tanh_gaussian":
            verdict = "baseline: vanishes"
        elif longest is not None and (base_solved is None or longest > base_solved):
            verdict = f"fixes vanishing (solves T = {longest})"
        else:
            verdict = "does not fix vanishing here"
        if off and div_off > 0:
            verdict += f"; explodes without clipping ({div_off} of {len(off) * config.seeds} runs diverged)"
        if off and succ_off < succ_on_at_off:
            Ts = ", ".join(str(r["T"]) for r in off)
            verdict += (
                f"; needs clipping at T = {Ts} ({succ_on_at_off:.2f} solved with, {succ_off:.2f} without)"
            )
        rows.append(
            {
                "cure": CURES[net],
                "net": net,
                "init_decades_per_step": init[net]["measured"] if net in init else math.nan,
                "longest_solved": longest,
                "success_clip_on": float(succ_on_at_off) if off else math.nan,
                "success_clip_off": float(succ_off) if off else math.nan,
                "clip_off_diverged": div_off if off else None,
                "verdict": verdict,
            }
        )
    off_all = [r for r in adding if r["clip"] == "off"]
    if off_all:
        on_same = [
            next(q for q in adding if q["net"] == r["net"] and q["T"] == r["T"] and q["clip"] == "on")
            for r in off_all
        ]
        gained = sum(a["success"] for a in on_same) - sum(r["success"] for r in off_all)
        div = sum(r["diverged"] for r in off_all)
        div_on = sum(a["diverged"] for a in on_same)
        base_off = [r["success"] for r in off_all if r["net"] == "tanh_gaussian"]
        base_on = [a["success"] for a, r in zip(on_same, off_all, strict=True) if r["net"] == "tanh_gaussian"]
        fixes = bool(base_on and base_off and np.mean(base_on) >= 0.5 > np.mean(base_off))
        base = (
            f"tanh baseline {np.mean(base_on):.2f} with, {np.mean(base_off):.2f} without" if base_on else ""
        )
        rows.append(
            {
                "cure": f"gradient clipping at {config.clip_norm:g}",
                "net": "all",
                "init_decades_per_step": math.nan,
                "longest_solved": None,
                "success_clip_on": float(np.mean([a["success"] for a in on_same])),
                "success_clip_off": float(np.mean([r["success"] for r in off_all])),
                "clip_off_diverged": div,
                "verdict": f"{'fixes' if fixes else 'does not fix'} vanishing ({base}); {div} runs diverged "
                f"without clipping, {div_on} with; success {gained / len(off_all):+.2f} per cell",
            }
        )
    return rows


def run(
    config: Config,
    *,
    on_cell: Callable[[str, Any], None] | None = None,
    done: Mapping[str, Any] = _NO_CELLS,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Compute every cell (or reuse it from `done`), with no file I/O.

    Args:
      config: the `Config`.
      on_cell: called as `on_cell(key, cell)` after each cell (JSON-ready).
      done: {key: cell} already computed (`jaxvg.report.run_resumable` passes them).
      log: optional progress printer.
    Returns:
      {"cells", "init_rows", "adding_rows", "order_rows", "verdict_rows", "computed", "seconds"}.
    """
    start = time.perf_counter()
    cells: dict[str, Any] = {}
    computed = []
    for key, thunk in cell_keys(config):
        if key in done:
            cells[key] = done[key]
            continue
        t0 = time.perf_counter()
        cells[key] = thunk()
        computed.append(key)
        if on_cell is not None:
            on_cell(key, cells[key])
        if log is not None:
            log(f"{key}: {time.perf_counter() - t0:.1f} s")
    return {
        "cells": cells,
        "init_rows": init_rows(cells, config),
        "adding_rows": adding_rows(cells, config),
        "order_rows": order_rows(cells),
        "verdict_rows": verdict_rows(cells, config),
        "computed": computed,
        "seconds": time.perf_counter() - start,
    }


# --------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------

VERDICT_COLUMNS = ("cure", "net", "init_decades_per_step", "longest_solved", "success_clip_on",
                   "success_clip_off", "clip_off_diverged", "verdict")  # fmt: skip


def summary_text(config: Config, res: Mapping[str, Any]) -> str:
    """summary.md: the four parts' tables and the literature next to them."""
    lines = [
        f"# Gradients through time: {len(config.nets)} nets, adding problem T in {list(config.lengths)}, "
        f"hidden {config.hidden}, {config.seeds} seeds, {config.steps} Adam steps",
        "",
        f"## 1. At init (T = {config.init_length}, hidden {config.init_hidden}, adding inputs, loss on h_T)",
        "",
        "Decades per step of log10 ||dL/dh_t|| from t = T back to 0 (negative: vanishing), measured exactly "
        "(time_flow) and predicted; `float32_zero_at_lag`: the first lag T - t at which the plain float32 "
        "gradient of autodiff is exactly 0 (empty: never).",
        "",
        report.format_table(res["init_rows"], floatfmt=".4f"),
        "",
        f"## 2. Adding problem (success: test MSE < {config.success_mse}; baseline 1/6)",
        "",
        report.format_table(res["adding_rows"], floatfmt=".4f"),
        "",
        f"## 3. Temporal order (success: test error < {config.success_error:.0%})",
        "",
        report.format_table(res["order_rows"], floatfmt=".4f"),
        "",
        "## 4. Verdict",
        "",
        report.format_table(res["verdict_rows"], VERDICT_COLUMNS, floatfmt=".4f"),
        "",
        "## The literature, next to these runs",
        "",
    ]
    for net in config.nets:
        lines.append(f"- {net} ({CURES[net]}): {LITERATURE[net]}")
    lines.append(
        f"- These runs: {config.steps} steps (the papers: 10^4-10^5), hidden {config.hidden}; "
        "agreement and disagreement are discussed in the module docstring of experiments/through_time.py."
    )
    return "\n".join(lines) + "\n"


def figure(res: Mapping[str, Any], config: Config):
    """Four panels: success vs T (clip on, open markers clip off); log10 ||dL/dh_t|| vs t at init with
    the theory (dotted) and the float32 underflow lag (x); before/after training at the longest T;
    Pascanu's lag contributions before/after training."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    fig = Figure(figsize=(13, 9.5))
    ax = fig.subplots(2, 2)
    colors = dict(zip(config.nets, [f"C{i}" for i in range(len(config.nets))], strict=False))
    rows = res["adding_rows"]
    for net in config.nets:
        on = sorted((r["T"], r["success"]) for r in rows if r["net"] == net and r["clip"] == "on")
        off = sorted((r["T"], r["success"]) for r in rows if r["net"] == net and r["clip"] == "off")
        if on:
            ax[0, 0].plot(*zip(*on, strict=True), "o-", color=colors[net], label=net)
        if off:
            ax[0, 0].plot(*zip(*off, strict=True), "o", mfc="none", ms=10, color=colors[net])
    ax[0, 0].set(xscale="log", xlabel="T (adding problem)", ylabel="fraction of seeds solved",
                 title="success vs T (filled: clip 1.0, open: no clipping)", ylim=(-0.05, 1.05))  # fmt: skip
    ax[0, 0].set_xticks(list(config.lengths))
    ax[0, 0].xaxis.set_major_formatter(ScalarFormatter())
    ax[0, 0].xaxis.set_minor_formatter(NullFormatter())
    ax[0, 0].legend(fontsize=8)
    cells = res["cells"]
    for net in config.nets:
        c = cells[f"init/{net}"]
        exact, theory = _arr(c["exact"]), _arr(c["theory"])
        t = np.arange(len(exact))
        seeds = np.asarray([_arr(e) for e in c["exact_seeds"]])
        seeds = seeds - seeds[:, -1:]
        ax[0, 1].fill_between(t, seeds.min(axis=0), seeds.max(axis=0), color=colors[net], alpha=0.2, lw=0)
        ax[0, 1].plot(t, exact - exact[-1], color=colors[net], label=net)
        if np.isfinite(theory).all():
            ax[0, 1].plot(t, theory, ":", color=colors[net])
        if c["underflow_lag"] is not None:
            k = len(exact) - 1 - c["underflow_lag"]
            ax[0, 1].plot([k], [exact[k] - exact[-1]], "x", ms=10, color=colors[net])
    ax[0, 1].set(xlabel="t", ylabel="log10 ||dL/dh_t|| - log10 ||dL/dh_T||",
                 title=f"at init, T = {config.init_length}: seed 0, band over seeds; dotted: theory; x: float32 reads 0")  # fmt: skip
    ax[0, 1].legend(fontsize=8)
    T = max(config.lengths)
    for net in config.nets:
        c = cells.get(f"adding/T={T:05d}/clip=on/{net}", {})
        if "state_grad_init" in c:
            a, b = _arr(c["state_grad_init"]), _arr(c["state_grad_trained"])
            ax[1, 0].plot(a - a[-1], "--", color=colors[net])
            ax[1, 0].plot(b - b[-1], color=colors[net], label=net)
            la, lb = _arr(c["lag_contrib_init"]), _arr(c["lag_contrib_trained"])
            lags = T - 1 - np.arange(T)
            ax[1, 1].plot(lags, la - np.nanmax(la), "--", color=colors[net])
            ax[1, 1].plot(lags, lb - np.nanmax(lb), color=colors[net], label=net)
    ax[1, 0].set(xlabel="t", ylabel="log10 ||dL/dh_t|| - log10 ||dL/dh_T||",
                 title=f"adding T = {T}, seed 0: at init (dashed) and trained (solid)")  # fmt: skip
    ax[1, 1].set(xlabel="lag T - t", ylabel="log10 ||dL/dh_t . d+h_t/dW|| (max = 0)",
                 title="Pascanu's lag contributions to dL/dW_rec (dashed: init)")  # fmt: skip
    ax[1, 0].legend(fontsize=8)
    ax[1, 1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def csv_rows(res: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = [{"part": "init", **r} for r in res["init_rows"]]
    rows += [{"part": "adding", **r} for r in res["adding_rows"]]
    rows += [{"part": "temporal_order", **r} for r in res["order_rows"]]
    return rows + [{"part": "verdict", **r} for r in res["verdict_rows"]]


# what `main` stores as metrics.json's "results", with "seconds" (the wall time of the call)
METRICS_KEYS = ("init_rows", "adding_rows", "order_rows", "verdict_rows", "cells", "computed")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse flags, run (resuming finished cells), write results/through_time/, print the verdict."""
    from jaxvg.report import cli, plotting

    config = cli.parse(Config, argv)
    t0 = time.perf_counter()
    res = report.run_resumable(run, config, log=lambda m: print(m, file=sys.stderr, flush=True))
    out = config.out_dir
    stored = {k: res[k] for k in METRICS_KEYS}
    stored["seconds"] = time.perf_counter() - t0
    report.write_metrics(out, config, stored, seeds=list(range(config.seeds)))
    report.write_csv(f"{out}/{NAME}.csv", csv_rows(res))
    text = summary_text(config, res)
    report.write_summary(out, text)
    plotting.save(figure(res, config), f"{out}/{NAME}.png")
    print(text)
    print(f"wall time {stored['seconds']:.0f} s", file=sys.stderr)
    return res


if __name__ == "__main__":
    main()
