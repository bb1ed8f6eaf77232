"""Which packages and data files the distribution holds (the metadata is in pyproject.toml).

The paper's published tables stay in ``results/published/`` in the repository and are
installed as data of the ``benchmark`` package (``benchmark/published/``), where
:func:`benchmark.analysis.published.published_dir` finds them through ``importlib.resources``.
Only ``benchmark``, ``registration`` and ``models`` are installed (not ``benchmarks/``, the
timing scripts, nor ``tests/``).
"""

from setuptools import find_packages, setup

PROFILES, PUBLISHED = "benchmark.profiles", "benchmark.published"  # data only, no code

setup(
    packages=[
        *find_packages(include=["benchmark", "benchmark.*", "registration", "registration.*",
                                "models", "models.*"]),
        PROFILES,
        PUBLISHED,
    ],
    package_dir={PUBLISHED: "results/published"},
    package_data={PROFILES: ["*.json"], PUBLISHED: ["*.csv", "README.md"]},
)
