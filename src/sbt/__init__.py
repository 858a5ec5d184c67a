"""The Sight Beyond Text workflow's package.

Each stage is a module the Snakemake rules run as ``python -m sbt.<stage>`` (convert,
train, evaluate, aggregate, ...); tests import the same code the workflow runs.
"""
