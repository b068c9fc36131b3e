"""The package's shape: a short top level, modules a reader can hold, layers that import only downwards, no circles
(read from the source by simlab.devtools.imports)."""

from __future__ import annotations

import textwrap

from simlab.devtools import imports
from simlab.paths import PACKAGE_ROOT

TOP_LEVEL = {"__init__.py", "cli.py", "paths.py"}


def test_top_level_holds_only_the_shared_modules():
    assert {p.name for p in PACKAGE_ROOT.glob("*.py")} <= TOP_LEVEL


def test_no_library_module_is_over_400_lines():
    long = {str(p.relative_to(PACKAGE_ROOT)): n for p in PACKAGE_ROOT.rglob("*.py")
            if "devtools" not in p.parts and (n := len(p.read_text(encoding="utf-8").splitlines())) > 400}
    assert not long


def test_every_package_has_a_layer():
    for module in imports.graph():
        imports.layer_of(imports.package_of(module))


def test_no_import_runs_back_up_and_no_circles():
    edges = imports.graph()
    assert imports.upward_imports(edges) == []
    assert imports.cycles(edges) == []


def _tree(tmp_path, files: dict[str, str]):
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return imports.graph(tmp_path)


def test_the_checker_sees_lazy_relative_and_from_package_imports_but_not_type_checking(tmp_path):
    edges = _tree(tmp_path, {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/rows.py": """
            from typing import TYPE_CHECKING
            if TYPE_CHECKING:
                from simlab.tasks.run import go
            def f():
                from . import prompts
        """,
        "data/prompts.py": "from simlab.data.rows import f\n",
        "tasks/__init__.py": "",
        "tasks/run.py": "from simlab import data\nfrom simlab.data import rows\n",
    })
    assert edges["simlab.data.rows"] == {"simlab.data.prompts"}
    assert edges["simlab.tasks.run"] == {"simlab.data", "simlab.data.rows"}
    assert imports.cycles(edges) == [["simlab.data.prompts", "simlab.data.rows"]]
    assert imports.upward_imports(edges) == []
    edges["simlab.data.rows"].add("simlab.tasks.run")
    assert imports.upward_imports(edges) == ["simlab.data.rows -> simlab.tasks.run"]


def test_the_entry_point_does_not_import_lightning_before_hydra_configures_logging():
    """Lightning imported before Hydra's logging setup adds its own stderr handler: a one-line user error would
    get company ("Seed set to 0")."""
    import subprocess
    import sys

    code = "import sys, simlab.tasks.entry; print('pytorch_lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
