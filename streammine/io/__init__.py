"""Input and storage I/O: URLs (``fs``), record schemas and the quarantine (``records``), validating readers
(``readers``) and the Ray Data datasource that runs them in read tasks (``datasource``).

Submodules are imported on use (``from streammine.io import readers``) so that importing the package stays light.
"""
