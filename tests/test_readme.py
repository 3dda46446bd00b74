"""The README stays true: its opening commands match .ci/run, its Python examples run and do what the
text says, and it points at nothing outside the repository. (Its numbers: tests/test_readme_numbers.py.)"""

import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands_and_ci_runs_the_test_one():
    commands = re.search(r"```bash\n(.*?)```", README, re.S).group(1).strip().splitlines()
    assert len(commands) == 2
    install_run, install_test = (c.split("#")[0].strip() for c in commands)
    assert install_run.startswith("pip install -e . && python -m experiments.")
    assert "pytest" in install_test
    assert install_test in (ROOT / ".ci" / "run").read_text()


def test_readme_user_model_example_measures_what_it_says(capsys):
    code = re.search(r"```python\n(.*?)```", README, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    flow = namespace["flow"]
    assert float(flow.vanishing_decades) > 100  # the README says 128 decades
    assert abs(float(flow.vanishing_decades) - 128) < 1
    assert "vanishing_decades" in capsys.readouterr().out


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_block_hooks_fill_every_flow_table_column():
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    import jaxvg

    recipe = _python_blocks()[1]
    namespace: dict = {"jax": jax, "nnx": nnx}  # the first example's imports
    exec(compile(recipe, "README.md", "exec"), namespace)  # defines Block
    block = namespace["Block"]
    plain = jaxvg.gradient_flow(
        _net([nnx.Sequential(nnx.Linear(32, 32, rngs=nnx.Rngs(0)), jax.nn.sigmoid) for _ in range(3)]),
        jnp.ones((16, 32)),
        jnp.zeros((16, 1)),
    )
    hooked = jaxvg.gradient_flow(
        _net([block(nnx.Rngs(0)) for _ in range(3)]), jnp.ones((16, 32)), jnp.zeros((16, 1))
    )
    for field in ("log10_kernel_grad", "log10_dphi", "dead_fraction"):
        assert np.isnan(getattr(plain, field)).all(), field  # what the README says the hooks fill
        assert np.isfinite(getattr(hooked, field)).all(), field
    # the same net as nnx.Sequential(Linear, sigmoid): the hooks change no number the two share
    np.testing.assert_allclose(hooked.log10_act_grad, plain.log10_act_grad, rtol=1e-6)


def _net(blocks):
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self):
            self.blocks = nnx.List(blocks)
            self.head = nnx.Linear(32, 1, rngs=nnx.Rngs(9))

        def __call__(self, x):
            for b in self.blocks:
                x = b(x)
            return self.head(x)

    return Net()


def test_readme_monitor_slicing_gives_one_record():
    import jax
    import numpy as np

    import jaxvg

    snippet = re.search(
        r"`(jaxvg\.flow_table\(jax\.tree\.map\(lambda a: a\[seed, t\], history\[\"monitor\"\]\)\))`", README
    )
    assert snippet, "README shows how to slice history['monitor'] for flow_table"
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    fit = jaxvg.fit(
        lambda rngs: jaxvg.MLP(4, 8, 3, 1, rngs=rngs), (x, np.zeros((32, 1), np.float32)), loss="mse",
        optimizer="sgd", learning_rate=0.1, steps=20, log_every=10, monitor_every=10, seeds=[0, 1], progress=False,
    )  # fmt: skip
    history, seed, t = fit.history, 1, 2
    assert list(history["monitor_step"]) == [0, 10, 20]
    table = eval(snippet.group(1), {"jaxvg": jaxvg, "jax": jax, "history": history, "seed": seed, "t": t})
    assert "±" not in table  # one record: no mean ± std over seeds and times
    one = jax.tree.map(lambda a: a[seed, t], history["monitor"])
    assert one.log10_act_grad.shape == (4,)


def test_readme_points_only_inside_the_repository():
    links = re.findall(r"\]\(([\w./-]*)(?:#[\w-]+)?\)", README)  # Markdown links and images
    assert "docs/claims.md" in links
    for target in filter(None, links):
        assert not target.startswith("/") and ".." not in target, target
        assert (ROOT / target).exists(), target
    # anchors name a heading (GitHub's slug: lower case, punctuation dropped, spaces to hyphens)
    slugs = {
        re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.*)$", README, re.M)
    }
    for anchor in re.findall(r"\]\(#([\w-]+)\)", README):
        assert anchor in slugs, anchor
    for unshipped in ("../", "shared/", "DESIGN.md", "STYLE.md", "SOURCE.md", "seed.txt"):
        assert unshipped not in README, unshipped


def test_readme_forward_signal_example_prints_what_it_says(capsys):
    code = next(b for b in _python_blocks() if "signal_propagation" in b)
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines() == ["1.0 1.0 1.8", "4.0 0.136 55.6"]  # as the README says
