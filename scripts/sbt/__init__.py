"""Shared code for the Sight Beyond Text workflow's stage scripts.

Each stage script in ``scripts/`` is a thin CLI over functions here, so tests import the
same code the workflow runs.
"""
