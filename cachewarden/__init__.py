"""The ``cachewarden`` command: one entry point that dispatches to each part of the product.

The top of the dependency order (engine <- service <- operator <- command): the engine
(``cache_runtime``), the operator (``cache_operator``) and the local cluster (``devcluster``) never
import this package.
"""
