"""Input and storage I/O: URLs (``fs``), record schemas and the quarantine (``records``), the input formats as
plug-ins cut into splits (``formats``; their reader functions also under their old names in ``readers``), a run's
read tasks (``run_input``) and the Ray Data datasource that runs them (``datasource``).

Submodules are imported on use (``from streammine.io import readers``) so that importing the package stays light.
"""
