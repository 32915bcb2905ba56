"""The query pass: queries -> vectors -> fan-out search, merge, filter, sample -> Parquet parts (streaming)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import pyarrow as pa
import ray

from ..config import MineConfig
from ..encode.plan import MINER_CPUS
from ..encode.query_vectors import QueryVectorSource, add_query_vectors, encoding_source
from ..index.store import total_rows
from ..keys import keys64
from ..io.run_input import query_read_fns, read_dataset
from ..sink.parts import MinedPartsSink
from .mine_stage import MineQueries
from .version import OpenVersion


def keep_query_slice(block: pa.Table, slice_id: int, n_slices: int) -> pa.Table:
    """The queries of one slice: a stable hash of the query id picks the slice (ANCE's rolling chunks)."""
    keys = keys64(block.column("query_id").to_pylist())
    return block.filter(pa.array(keys % np.uint64(n_slices) == np.uint64(slice_id)))


def mine_queries(cfg: MineConfig, version: OpenVersion, out_url: str, metrics, model_version: str,
                 query_slice: Optional[tuple] = None, source: Optional[QueryVectorSource] = None) -> None:
    """The queries of ``cfg``'s input mined against ``version``'s index into Parquet parts under ``out_url``.

    ``source``: where the query vectors come from (``query_vectors.choose_source``; default: the user's vectors or
    encoder actors). With the cache as source the miners look the vectors up themselves and no encoder actor is
    started for the pass. ``query_slice``: ``(slice_id, n_slices)``, mine only that slice of the queries."""
    paths = version.paths
    ds = read_dataset(query_read_fns(cfg, paths.read_quarantine), "queries")
    if query_slice is not None and query_slice[1] > 1:
        ds = ds.map_batches(keep_query_slice, batch_format="pyarrow", fn_kwargs={"slice_id": query_slice[0],
                                                                                 "n_slices": query_slice[1]},
                            num_cpus=0.25)
    ds = ds.repartition(target_num_rows_per_block=cfg.run.query_batch_size)  # see store_build.build_store
    ds, miner_cache = add_query_vectors(ds, cfg, source or encoding_source(cfg), paths.query_cache, metrics,
                                        version.plan)
    ds = ds.map_batches(MineQueries, batch_size=cfg.run.query_batch_size, batch_format="pyarrow",
                        fn_constructor_args=(cfg, version.index.handles, total_rows(version.manifest), model_version,
                                             paths.quarantine, metrics, miner_cache),
                        compute=ray.data.ActorPoolStrategy(size=cfg.run.miner_actors), num_cpus=MINER_CPUS,
                        num_gpus=cfg.mining.cross_encoder.gpus_per_actor if cfg.mining.cross_encoder.model else 0)
    ds.write_datasink(MinedPartsSink(out_url))
