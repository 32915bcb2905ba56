"""The encoder plan: how many actors, what they request and how many threads they use, from config and cluster."""
import pytest

from streammine.config import EncoderConfig
from streammine.encode.plan import CPU_BLOCK_ROWS, GPU_BLOCK_ROWS, ClusterView, check_local_fit, plan_encoders
from streammine.errors import ConfigError


def local(cores, ray_cpus=None):
    return ClusterView(cpus=float(ray_cpus or max(cores, 2)), gpus=0.0, nodes=1, host_cpus=cores)


def test_two_core_machine_gets_two_single_threaded_encoders_and_a_free_cpu():
    plan = plan_encoders(EncoderConfig(), local(2))
    assert (plan.num_actors, plan.torch_threads, plan.cpus_per_actor) == (2, 1, 0.37)
    # two miners beside the query encoders (the default): their requests are left free too
    assert plan_encoders(EncoderConfig(), local(2), miner_actors=2).cpus_per_actor == 0.25
    assert plan.block_rows == CPU_BLOCK_ROWS and plan.max_tasks_in_flight == 1 and not plan.on_gpu


@pytest.mark.parametrize("miners", [1, 2, 3])
@pytest.mark.parametrize("cores", [1, 2, 3, 4, 6, 8, 16, 64])
def test_local_cpu_plans_never_oversubscribe_the_cores(cores, miners):
    plan = plan_encoders(EncoderConfig(), local(cores), miner_actors=miners)
    assert 1 <= plan.num_actors <= 4
    assert plan.num_actors * plan.torch_threads <= cores
    # a 1-CPU task and the miner actors (0.25 each) fit beside the encoders (Ray starts with >= 2 logical CPUs)
    assert plan.num_actors * plan.cpus_per_actor + 1 + 0.25 * miners <= max(cores, 2) + 1e-9
    assert plan.cpus_per_actor <= plan.torch_threads


def test_explicit_settings_are_kept():
    e = EncoderConfig(num_actors=1, cpus_per_actor=2.0, gpus_per_actor=0.0)
    plan = plan_encoders(e, local(2), block_rows=1000)
    assert (plan.num_actors, plan.cpus_per_actor, plan.torch_threads, plan.block_rows) == (1, 2.0, 2, 1000)


def test_one_encoder_on_two_cores_uses_both():
    plan = plan_encoders(EncoderConfig(num_actors=1), local(2))
    assert (plan.torch_threads, plan.cpus_per_actor) == (2, 0.75)


def test_gpus_get_one_encoder_each_and_big_blocks():
    plan = plan_encoders(EncoderConfig(), ClusterView(cpus=32, gpus=4, nodes=1, host_cpus=32))
    assert (plan.num_actors, plan.gpus_per_actor, plan.block_rows) == (4, 1.0, GPU_BLOCK_ROWS)
    assert plan.on_gpu and plan.max_tasks_in_flight is None


def test_fractional_gpus_pack_several_encoders_per_gpu():
    plan = plan_encoders(EncoderConfig(gpus_per_actor=0.5), ClusterView(cpus=8, gpus=2, nodes=1, host_cpus=8))
    assert plan.num_actors == 4


def test_cpu_cluster_uses_multi_core_actors_on_three_quarters_of_it():
    plan = plan_encoders(EncoderConfig(), ClusterView(cpus=48, gpus=0, nodes=3, host_cpus=2))
    assert (plan.cpus_per_actor, plan.torch_threads, plan.num_actors) == (4.0, 4, 9)


def test_a_query_pass_that_cannot_fit_one_machine_is_refused_up_front():
    cluster = local(2)
    plan = plan_encoders(EncoderConfig(), cluster, miner_actors=2)
    check_local_fit(plan, cluster, 2, precomputed=False)          # the defaults fit
    check_local_fit(plan, cluster, 3, precomputed=True)           # 0.25 lookup + 0.75 + 1
    for miners, precomputed in ((6, False), (4, True)):
        big = plan_encoders(EncoderConfig(), cluster, miner_actors=miners)
        with pytest.raises(ConfigError, match="run.miner_actors"):
            check_local_fit(big, cluster, miners, precomputed)
    far = ClusterView(cpus=2.0, gpus=0.0, nodes=3, host_cpus=2)    # a cluster may grow: not checked
    check_local_fit(plan_encoders(EncoderConfig(), far), far, 8, precomputed=False)
