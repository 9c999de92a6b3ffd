"""Packaging beyond pyproject.toml: the top-level `targets/` and `profiles/` directories
ship inside the package as `adaexport._targets` and `adaexport._profiles` (see
adaexport/data_paths.py)."""

from setuptools import find_packages, setup

DATA = {"adaexport._targets": "targets", "adaexport._profiles": "profiles"}

setup(packages=find_packages(include=["adaexport", "adaexport.*"]) + list(DATA), package_dir=DATA)
