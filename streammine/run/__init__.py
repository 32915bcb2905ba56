"""Opening and driving a run: paths (``paths``), Ray (``ray_runtime``), a model version ready to mine with
(``version``: store built or reused, shards started), the query pass (``query_pass``), the output folder
(``output``) and the one-shot mining driver (``mine``). ``refresh.serve`` opens its versions the same way."""
