"""Where the mining time of one query block goes, in one process without Ray: 4 IVF-Flat shards answer (faiss
search, exact rescoring, positives), the answers merge, mine_batch filters and samples; then a cProfile of it.

    python benchmarks/profile_mining_block.py 200000 4000    # documents, queries in the block
"""
import cProfile, pstats, time, sys
import numpy as np
from streammine.config import IndexConfig, MineConfig
from streammine.index.shard import IndexShard, ShardDocs
from streammine.index.merge import merge_answers
from streammine.mining import mine_batch
from streammine.keys import keys64

n_docs, n_q, dim, S = int(sys.argv[1]), int(sys.argv[2]), 384, 4
rng = np.random.default_rng(0)
centers = rng.standard_normal((1000, dim)).astype(np.float32)
x = centers[rng.integers(0, 1000, n_docs)] + 0.7 * rng.standard_normal((n_docs, dim)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
pos = rng.choice(n_docs, n_q, replace=False)
q = x[pos] + 0.05 * rng.standard_normal((n_q, dim)).astype(np.float32)
q /= np.linalg.norm(q, axis=1, keepdims=True)
shards = []
for s in range(S):
    idx = np.arange(s, n_docs, S)
    cfg = IndexConfig(kind="ivf-flat", shards=S, nlist=2048 // S, nprobe=32 // S)
    sh = IndexShard(cfg, dim, s)
    sh.add(ShardDocs(doc_ids=np.array([f"d{i}" for i in idx], object), ordinals=idx.astype(np.int64),
                     text_keys=keys64([f"t{i}" for i in idx]), vectors=x[idx],
                     locations=np.array(["x"] * len(idx), object)))
    t = time.perf_counter(); sh.build(); print("build", s, time.perf_counter() - t)
    shards.append(sh)
mc = MineConfig()
mc.mining.sampler.range_max = 50
k = 50 + 1 + 16
pids = [[f"d{p}"] for p in pos]
qkeys = keys64([f"q{i}" for i in range(n_q)])
def run():
    t0 = time.perf_counter()
    answers = [sh.answer(q, k, pids) for sh in shards]
    t1 = time.perf_counter()
    cands, positives, random, missing = merge_answers(answers, k)
    t2 = time.perf_counter()
    mined = mine_batch(qkeys, cands, positives, mc.mining, random)
    t3 = time.perf_counter()
    print(f"answer x{S} {t1-t0:.2f}s  merge {t2-t1:.2f}s  mine {t3-t2:.2f}s")
run()
cProfile.run("run()", "/tmp/prof.out")
pstats.Stats("/tmp/prof.out").sort_stats("cumulative").print_stats(25)
