"""Every Python example in the README runs as printed, against a real (briefly) trained and evaluated run;
the names they import from ``mrl`` are its exports."""

from __future__ import annotations

import re

import pytest

from mrl.cli.export import main as export_main
from mrl.evaluation.runner import evaluate
from mrl.training.procedure import run_training
from mrl_testing.configs import FAST, ROOT, compose_train, eval_cfg

RUN_PLACEHOLDERS = ("outputs/train/digits_mrl/<date-time>", "outputs/<run>")


def readme_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.S | re.M)


def test_readme_has_examples():
    examples = readme_examples()
    assert len(examples) >= 3
    assert any("MatryoshkaHead(" in code for code in examples)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("readme") / "run"
    run_training(compose_train([*FAST, "trainer.max_epochs=1"], run_dir), run_dir)
    evaluate(eval_cfg(run_dir))
    export_main([str(run_dir)])
    return run_dir


@pytest.mark.parametrize("index", range(len(readme_examples())))
def test_readme_example_runs(index, run_dir, capsys):
    code = readme_examples()[index]
    for placeholder in RUN_PLACEHOLDERS:
        code = code.replace(placeholder, str(run_dir))
    assert "<run>" not in code and "<date-time>" not in code, "a run placeholder the test does not know"
    exec(compile(code, f"README.md example {index + 1}", "exec"), {"__name__": "readme_example"})
    assert capsys.readouterr().out.strip(), "every example prints its result"


def test_package_exports_the_building_blocks():
    import mrl
    from mrl.core.heads import MatryoshkaHead
    from mrl.retrieval import AdaptiveRetriever

    assert mrl.MatryoshkaHead is MatryoshkaHead and mrl.AdaptiveRetriever is AdaptiveRetriever
    for name in mrl.__all__:
        assert getattr(mrl, name) is not None, name
    assert set(mrl.__all__) <= set(dir(mrl))
    with pytest.raises(AttributeError, match="no attribute 'MatryoshkaHeadd'"):
        mrl.MatryoshkaHeadd  # noqa: B018
