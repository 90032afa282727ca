"""Fitting trials into a cluster: driver, workers and Ray Data together, never a deadlock."""

import pytest

from data_pipeline.errors import UserInputError
from genre.sweep.plan import (
    DATA_CPUS,
    DRIVER_CPUS,
    MPS_PIPE_VARIABLE,
    ClusterGrowth,
    NodeType,
    ResourceRequest,
    plan_cluster,
    plan_resources,
    sharing_note,
)


def test_six_trials_share_two_cores_and_leave_one_for_ray_data():
    plan = plan_resources(ResourceRequest(cluster_cpus=2, cluster_gpus=0, num_trials=6))
    assert plan.max_concurrent == 6
    reserved = plan.max_concurrent * (DRIVER_CPUS + plan.cpus_per_trial)
    assert reserved <= 2 - DATA_CPUS + 1e-9
    assert plan.torch_threads == 1


def test_a_whole_cpu_per_trial_on_two_cores_runs_one_at_a_time():
    # Two drivers of 1 CPU each plus workers would fill two cores: the worker group would wait forever.
    plan = plan_resources(ResourceRequest(cluster_cpus=2, cluster_gpus=0, num_trials=6, cpus_per_trial=0.99))
    assert plan.max_concurrent == 1


def test_a_trial_that_cannot_fit_is_refused_with_the_numbers():
    with pytest.raises(UserInputError, match=r"one trial needs 2.01 CPUs .* only 1 of Ray's 2"):
        plan_resources(ResourceRequest(cluster_cpus=2, cluster_gpus=0, num_trials=2, cpus_per_trial=2))


def test_gpus_that_do_not_exist_are_refused():
    with pytest.raises(UserInputError, match="more GPUs than Ray has"):
        plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=0, num_trials=6, gpus_per_trial=1))


def test_half_a_gpu_per_trial_packs_two_trials_on_each_gpu():
    plan = plan_resources(
        ResourceRequest(cluster_cpus=16, cluster_gpus=2, num_trials=6, gpus_per_trial=0.5, num_workers=1)
    )
    assert plan.max_concurrent == 4
    assert plan.gpus_per_worker == 0.5
    assert plan.cpus_per_trial * 4 + 4 * DRIVER_CPUS <= 16 - DATA_CPUS


def test_too_high_a_max_concurrent_is_lowered_and_said():
    plan = plan_resources(
        ResourceRequest(cluster_cpus=4, cluster_gpus=0, num_trials=6, cpus_per_trial=1, max_concurrent=5)
    )
    assert plan.max_concurrent == 2
    assert any("lowered to 2" in note for note in plan.notes)


def test_workers_split_the_trials_cpus():
    plan = plan_resources(
        ResourceRequest(cluster_cpus=18, cluster_gpus=0, num_trials=2, num_workers=4, cpus_per_trial=8)
    )
    assert (plan.cpus_per_worker, plan.torch_threads, plan.max_concurrent) == (2, 2, 2)


def test_one_cpu_is_too_few_for_a_sweep():
    with pytest.raises(UserInputError, match="needs at least 2"):
        plan_resources(ResourceRequest(cluster_cpus=1, cluster_gpus=0, num_trials=1))


def test_a_worker_never_asks_for_more_cpus_than_one_node_has():
    # Two nodes of 2 CPUs: 3 CPUs are free for one trial, but its one worker must fit on one node.
    plan = plan_resources(ResourceRequest(cluster_cpus=4, cluster_gpus=0, num_trials=1, largest_node_cpus=2))
    assert plan.cpus_per_worker <= 2 - DRIVER_CPUS
    with pytest.raises(UserInputError, match="largest node has 2"):
        plan_resources(
            ResourceRequest(
                cluster_cpus=4, cluster_gpus=0, num_trials=1, cpus_per_trial=2.5, largest_node_cpus=2
            )
        )


def test_a_worker_never_asks_for_more_gpus_than_one_node_has():
    with pytest.raises(UserInputError, match="raise --num-workers"):
        plan_resources(
            ResourceRequest(
                cluster_cpus=32, cluster_gpus=8, num_trials=1, gpus_per_trial=2, largest_node_gpus=1
            )
        )
    plan = plan_resources(
        ResourceRequest(
            cluster_cpus=32,
            cluster_gpus=8,
            num_trials=1,
            gpus_per_trial=2,
            num_workers=2,
            largest_node_gpus=1,
        )
    )
    assert plan.gpus_per_worker == 1


def test_with_no_gpu_flag_six_trials_share_one_gpu_and_the_plan_says_so():
    plan = plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=1, num_trials=6))
    assert plan.gpus_per_worker == pytest.approx(0.16) and plan.max_concurrent == 6
    assert any("0.16 per trial" in note and "6 trial(s) share" in note for note in plan.notes)


def test_with_no_gpu_flag_and_no_gpu_in_ray_the_trials_train_on_cpu_and_the_plan_says_so():
    plan = plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=0, num_trials=6))
    assert plan.gpus_per_worker == 0 and any("train on CPU" in note for note in plan.notes)


def test_zero_gpus_forces_the_cpu_without_a_note():
    plan = plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=8, num_trials=6, gpus_per_trial=0))
    assert plan.gpus_per_worker == 0 and not plan.notes


def test_with_no_gpu_flag_each_of_several_workers_gets_a_whole_gpu():
    plan = plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=4, num_trials=6, num_workers=2))
    assert plan.gpus_per_worker == 1 and plan.max_concurrent == 2


def test_several_workers_without_a_whole_gpu_each_are_refused_with_the_reason():
    with pytest.raises(UserInputError, match="a whole GPU per worker, and Ray has 1"):
        plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=1, num_trials=6, num_workers=2))
    with pytest.raises(UserInputError, match="two workers of a trial on one GPU, which NCCL refuses"):
        plan_resources(
            ResourceRequest(cluster_cpus=16, cluster_gpus=4, num_trials=6, num_workers=2, gpus_per_trial=1)
        )


GPU_NODES = NodeType("gpu", cpus=8, gpus=1, max_workers=4)
CPU_NODES = NodeType("cpu", cpus=16, gpus=0, max_workers=2)
NO_AUTOSCALER = ClusterGrowth(None, autoscaler=False, source="no autoscaler configuration found")
UNREADABLE = ClusterGrowth(None, autoscaler=True, source="the RayCluster 'genre' could not be read (403)")


def adds(*node_types: NodeType) -> ClusterGrowth:
    """A cluster whose autoscaler's node types genre read."""
    return ClusterGrowth(node_types, autoscaler=True, source="the launcher's config")


def test_a_growing_cluster_with_room_now_is_planned_as_it_is():
    now = ResourceRequest(cluster_cpus=16, cluster_gpus=1, num_trials=6)
    assert plan_cluster(now, adds(GPU_NODES)) == plan_resources(now)


def test_an_empty_head_with_gpu_nodes_to_add_plans_six_trials_on_one_gpu_node():
    plan = plan_cluster(
        ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=6), adds(CPU_NODES, GPU_NODES)
    )
    assert plan.gpus_per_worker == pytest.approx(0.16) and plan.max_concurrent == 6
    assert 6 * (plan.cpus_per_trial + DRIVER_CPUS) <= GPU_NODES.cpus - DATA_CPUS + 1e-9
    assert "planned for 1 of its 'gpu' nodes (8 CPU, 1 GPU; up to 4)" in plan.notes[0]


def test_cpu_trials_on_a_growing_cluster_go_to_the_nodes_with_most_cpus():
    plan = plan_cluster(
        ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=6, gpus_per_trial=0),
        adds(GPU_NODES, CPU_NODES),
    )
    assert plan.gpus_per_worker == 0 and "'cpu' nodes" in plan.notes[0]
    assert plan.cpus_per_trial == pytest.approx(2.49)


def test_cpus_but_no_gpu_now_still_waits_for_a_gpu_node_when_one_can_be_added():
    plan = plan_cluster(ResourceRequest(cluster_cpus=4, cluster_gpus=0, num_trials=6), adds(GPU_NODES))
    assert plan.gpus_per_worker > 0 and "wait while its autoscaler adds them" in plan.notes[0]


def test_several_gpu_workers_span_several_one_gpu_nodes():
    plan = plan_cluster(
        ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=4, num_workers=2), adds(GPU_NODES)
    )
    assert plan.gpus_per_worker == 1 and plan.max_concurrent == 2  # 4 nodes, 2 per trial


def test_only_what_no_node_type_could_hold_is_refused_on_a_growing_cluster():
    with pytest.raises(UserInputError, match=r"one trial needs 12.01 CPUs.*on the 'gpu' nodes"):
        plan_cluster(
            ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=1, cpus_per_trial=12), adds(GPU_NODES)
        )
    with pytest.raises(UserInputError, match=r"asks for GPUs.*adds only 'cpu' nodes"):
        plan_cluster(
            ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=1, gpus_per_trial=1), adds(CPU_NODES)
        )


def test_a_cluster_without_autoscaler_too_small_now_waits_with_each_trials_own_cpu_request():
    plan = plan_cluster(ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=6), NO_AUTOSCALER)
    assert (plan.cpus_per_trial, plan.gpus_per_worker, plan.max_concurrent) == (1, 0, 6)
    assert "train on CPU" in plan.notes[0]
    assert (
        "no autoscaler runs to add nodes" in plan.notes[1]
        and "waits for a node that holds it" in plan.notes[1]
    )


def test_an_autoscaler_that_cannot_be_read_waits_with_each_trials_own_request_when_asked():
    asked = plan_cluster(
        ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=6, gpus_per_trial=0.5), UNREADABLE
    )
    assert asked.gpus_per_worker == 0.5 and asked.max_concurrent == 6
    assert (
        "genre cannot see which nodes it may add (the RayCluster 'genre' could not be read" in asked.notes[0]
    )
    on_cpu = plan_cluster(
        ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=6, gpus_per_trial=0), UNREADABLE
    )
    assert on_cpu.gpus_per_worker == 0 and on_cpu.max_concurrent == 6


@pytest.mark.parametrize("cpus", [0, 16], ids=["too-small-now", "room-now"])
def test_auto_refuses_an_autoscaler_it_cannot_read_without_a_gpu_now(cpus):
    # It may add GPU nodes: training on CPU would be a guess, and a silent one.
    with pytest.raises(UserInputError) as refused:
        plan_cluster(ResourceRequest(cluster_cpus=cpus, cluster_gpus=0, num_trials=6), UNREADABLE)
    message = str(refused.value)
    assert "\n" not in message and "could not be read (403)" in message
    assert "--gpus-per-trial 0 to train on CPU" in message and "--gpus-per-trial N" in message


def test_auto_on_an_autoscaler_it_cannot_read_shares_the_gpus_there_are_now():
    now = ResourceRequest(cluster_cpus=16, cluster_gpus=1, num_trials=6)
    assert plan_cluster(now, UNREADABLE) == plan_resources(now)


def test_auto_waiting_on_a_cluster_with_a_gpu_now_asks_for_a_gpu_share_not_the_cpu():
    # One CPU and one GPU now hold no trial (Ray Data keeps the CPU): the trials wait, for GPUs.
    plan = plan_cluster(ResourceRequest(cluster_cpus=1, cluster_gpus=1, num_trials=6), UNREADABLE)
    assert plan.gpus_per_worker == pytest.approx(0.16) and "waits for a node that holds it" in plan.notes[0]


def test_auto_on_a_cluster_without_autoscaler_trains_on_cpu_and_the_first_line_says_why():
    plan = plan_cluster(ResourceRequest(cluster_cpus=16, cluster_gpus=0, num_trials=6), NO_AUTOSCALER)
    assert plan.gpus_per_worker == 0 and plan.max_concurrent == 6
    assert plan.notes[0].startswith("GPUs: Ray has none, and no autoscaler runs to add one")
    assert "train on CPU" in plan.notes[0] and "--gpus-per-trial N" in plan.notes[0]
    assert len(plan.notes) == 1  # not said twice


def test_auto_on_a_cluster_that_adds_only_cpu_nodes_says_so_first():
    plan = plan_cluster(ResourceRequest(cluster_cpus=16, cluster_gpus=0, num_trials=6), adds(CPU_NODES))
    assert plan.gpus_per_worker == 0
    assert plan.notes[0].startswith("GPUs: Ray has none, and the cluster adds no node type with one")


def test_auto_on_a_cluster_that_adds_no_node_trains_on_what_it_has_and_says_so_first():
    plan = plan_cluster(ResourceRequest(cluster_cpus=16, cluster_gpus=0, num_trials=6), adds())
    assert plan.gpus_per_worker == 0 and plan.notes[0].startswith(
        "GPUs: Ray has none, and the cluster adds no node"
    )


def test_bad_flags_are_refused_on_a_growing_cluster_too():
    with pytest.raises(UserInputError, match="--max-concurrent must be at least 1"):
        plan_cluster(
            ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=6, max_concurrent=0), NO_AUTOSCALER
        )
    with pytest.raises(UserInputError, match="NCCL refuses"):
        two_workers_on_one_gpu = ResourceRequest(
            cluster_cpus=0, cluster_gpus=0, num_trials=1, num_workers=2, gpus_per_trial=1
        )
        plan_cluster(two_workers_on_one_gpu, UNREADABLE)


def test_trials_sharing_a_gpu_are_said_to_take_turns_unless_mps_runs(tmp_path):
    shared = plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=1, num_trials=6))
    no_mps = {MPS_PIPE_VARIABLE: str(tmp_path)}
    assert "6 trials per GPU take turns" in sharing_note(shared, local=True, environ=no_mps)
    (tmp_path / "control").touch()  # the MPS control daemon's pipe
    assert "side by side through NVIDIA MPS" in sharing_note(shared, local=True, environ=no_mps)
    assert "unless it was started there" in sharing_note(shared, local=False, environ=no_mps)
    whole = plan_resources(ResourceRequest(cluster_cpus=16, cluster_gpus=8, num_trials=6, gpus_per_trial=1))
    assert sharing_note(whole, local=True) is None


def test_with_no_gpu_flag_and_only_cpu_nodes_to_add_the_trials_wait_for_cpu_nodes():
    plan = plan_cluster(ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=6), adds(CPU_NODES))
    assert plan.gpus_per_worker == 0 and "train on CPU" in plan.notes[0]
    assert "planned for 1 of its 'cpu' nodes" in plan.notes[1]


def test_many_trials_spread_over_as_many_gpu_nodes_as_they_fill_six_to_a_gpu():
    plan = plan_cluster(ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=24), adds(GPU_NODES))
    assert plan.gpus_per_worker == pytest.approx(0.16) and plan.max_concurrent == 24
    assert "planned for 4 of its 'gpu' nodes" in plan.notes[0]


def test_a_trial_needing_more_nodes_than_the_autoscaler_adds_is_refused():
    one_node = NodeType("gpu", cpus=8, gpus=1, max_workers=1)
    with pytest.raises(UserInputError, match="needs 2 of the 'gpu' nodes"):
        plan_cluster(
            ResourceRequest(cluster_cpus=0, cluster_gpus=0, num_trials=1, num_workers=2), adds(one_node)
        )
