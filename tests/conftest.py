"""Shared pytest set-up: makes tests/reference.py importable and loads spyre_ops."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import spyre_ops  # noqa: E402,F401  (registers the ops for every test)
