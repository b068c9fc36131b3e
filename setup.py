"""conf/ (the Hydra configs beside run.py) ships inside the wheel as simlab/conf, so an installed simlab runs the
same configs (`simlab run`, `simlab.evaluate`) with no clone; everything else is in pyproject.toml. Only a
setup.py can map a folder outside the package into it while the packages are still found automatically."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages(include=["simlab", "simlab.*"], exclude=["*.__pycache__"]), "simlab.conf"],
    package_dir={"simlab.conf": "conf"},
)
