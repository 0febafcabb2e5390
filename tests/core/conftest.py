"""Puts the parent ``tests/`` directory on ``sys.path``, so rule tests import ``rule_testing``."""

import os
import sys

_TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
