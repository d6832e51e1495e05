"""fabnode: a peer-to-peer node for sharing open-hardware designs between workshops.

Installed, this folder is the package ``fabnode`` (``pyproject.toml`` maps it with setuptools'
``package-dir``): ``fabnode.protocol`` (pure formats and rules), ``fabnode.storage`` (the SQLite
store), ``fabnode.node`` (files, network, HTTP) and ``fabnode.cli`` (the command line).
"""
