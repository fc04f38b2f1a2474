"""The benchmark cases of this repository: ``pytest --shrink-method=all`` collects this folder.

The case itself lives in the plugin (``pytest_shrinkbench/plugin/cases.py``) so that any project gets
it; importing the tests here collects them here. Without ``--shrink-method`` its cases are skipped.
"""

from pytest_shrinkbench.plugin.cases import test_case, test_dense_latency  # noqa: F401
