"""The README stays true: its opening commands match .ci/run, and its Python example runs and prints
what the text says."""

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
