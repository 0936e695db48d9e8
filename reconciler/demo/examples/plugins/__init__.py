"""Example external OpenBao/Vault plugins (backend and database) written in Python.

`build.build_plugins(dest)` writes them into a plugin directory; `build.PLUGINS`
lists them without building. See README.md in this directory for the paths
each plugin serves.
"""
