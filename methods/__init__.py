"""The five ShrinkBench baselines, a structured one (l1-filter), a gradual one (gradual-magnitude) and the
language-model ones (row-magnitude, wanda, sparsegpt and their -2of4 variants: row-magnitude-2of4 is 2:4 magnitude
pruning), one plain file each;
installed as ``pytest_shrinkbench.baselines``, each module listed under the ``pytest_shrinkbench.methods`` entry points.

They are also the examples of how to write a method: copy one to ``methods/mine.py``. Importing this package
registers nothing: ``pytest_shrinkbench.sandbox.methods.load_installed()`` imports the installed method modules.
"""
