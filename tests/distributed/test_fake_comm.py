"""The communicator interface (tinygrad_bn/distributed/comm.py) and the in-process fake world
(distributed/fake.py) that the SyncBatchNorm tests run K ranks on."""
import copy
import threading

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import distributed as dist
from tinygrad_bn.distributed.comm import Communicator, SingleProcess
from tinygrad_bn.distributed.fake import FakeCommunicator, FakeWorld


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_all_gather_is_in_rank_order_and_all_reduce_is_identical_on_every_rank(k):
    world = FakeWorld(k)

    def fn(comm):
        mine = np.arange(3, dtype=np.float64) * 0.1 + comm.rank
        return comm.all_gather(mine), comm.all_reduce(mine), comm.all_reduce(mine, "max"), \
            comm.all_reduce(mine, "min")

    results = world.run(fn)
    contributions = [np.arange(3) * 0.1 + r for r in range(k)]
    for gathered, total, largest, smallest in results:
        assert len(gathered) == k
        for got, want in zip(gathered, contributions):
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(total, results[0][1])  # bit-identical everywhere
        np.testing.assert_allclose(total, sum(contributions), rtol=1e-15)
        np.testing.assert_array_equal(largest, contributions[-1])
        np.testing.assert_array_equal(smallest, contributions[0])


def test_results_are_private_copies_and_the_argument_is_untouched():
    world = FakeWorld(2)

    def fn(comm):
        mine = np.full(2, float(comm.rank + 1))
        gathered = comm.all_gather(mine)
        summed = comm.all_reduce(mine)
        gathered[0][...] = -100.0  # must not reach the other rank
        summed[...] = -100.0
        comm.barrier()
        return mine, comm.all_gather(mine)

    (mine0, again0), (mine1, again1) = world.run(fn)
    np.testing.assert_array_equal(mine0, [1, 1])
    np.testing.assert_array_equal(mine1, [2, 2])
    np.testing.assert_array_equal(again0[0], [1, 1])


def test_calls_and_log_count_every_collective():
    world = FakeWorld(2)

    def fn(comm):
        comm.all_gather(np.zeros(5))
        comm.all_reduce(np.zeros(4))
        comm.all_reduce(np.zeros(4), "max")
        return dict(comm.calls), list(comm.log)

    for calls, log in world.run(fn):
        assert calls == {"all_gather": 1, "all_reduce": 2}
        assert log == [("all_gather", (5,)), ("all_reduce", (4,)), ("all_reduce", (4,))]
    world.comms[0].reset_counts()
    assert world.comms[0].calls == {} and world.comms[0].log == []


def test_mismatched_collectives_raise_instead_of_hanging():
    world = FakeWorld(2, timeout=10)

    def fn(comm):
        if comm.rank == 0:
            return comm.all_gather(np.zeros(3))
        return comm.all_reduce(np.zeros(3))

    with pytest.raises(RuntimeError, match="mismatched collectives: rank 0 called all_gather"):
        world.run(fn)


def test_mismatched_shapes_raise():
    world = FakeWorld(2, timeout=10)
    with pytest.raises(RuntimeError, match=r"shape \[3\].*shape \[4\]"):
        world.run(lambda comm: comm.all_gather(np.zeros(3 + comm.rank)))


def test_an_exception_on_one_rank_is_reraised_and_does_not_hang_the_others():
    world = FakeWorld(3, timeout=30)

    def fn(comm):
        if comm.rank == 1:
            raise ValueError("rank 1 failed on its own")
        return comm.all_gather(np.zeros(2))  # ranks 0 and 2 would wait for rank 1 forever

    with pytest.raises(ValueError, match="rank 1 failed on its own"):
        world.run(fn)
    # the world is usable again afterwards
    assert len(world.run(lambda comm: comm.all_gather(np.zeros(1)))[0]) == 3


def test_a_rank_that_never_joins_times_out_with_a_clear_error():
    world = FakeWorld(2, timeout=0.5)

    def fn(comm):
        if comm.rank == 0:
            return comm.all_reduce(np.zeros(2))
        return None  # rank 1 skips the collective

    with pytest.raises(RuntimeError, match="all_reduce #1 did not complete.*same collectives in the same order"):
        world.run(fn)


def test_the_default_communicator_is_per_thread_inside_run_and_single_process_outside():
    assert isinstance(dist.get_default_communicator(), SingleProcess)
    assert not dist.is_initialized()
    assert dist.get_world_size() == 1 and dist.get_rank() == 0
    world = FakeWorld(3)
    seen = world.run(lambda comm: (dist.get_default_communicator() is comm, dist.get_rank(),
                                   dist.get_world_size(), dist.is_initialized()))
    assert seen == [(True, r, 3, True) for r in range(3)]
    assert isinstance(dist.get_default_communicator(), SingleProcess)


def test_set_default_communicator_is_process_wide_and_restorable():
    world = FakeWorld(1)
    previous = dist.set_default_communicator(world.comms[0])
    try:
        assert dist.get_default_communicator() is world.comms[0]
        other_thread = []
        t = threading.Thread(target=lambda: other_thread.append(dist.get_default_communicator()))
        t.start(), t.join()
        assert other_thread == [world.comms[0]]
    finally:
        dist.set_default_communicator(previous)
    assert isinstance(dist.get_default_communicator(), SingleProcess)
    with pytest.raises(TypeError, match="expected a Communicator or None"):
        dist.set_default_communicator("world")


def test_use_communicator_nests_and_restores():
    a, b = FakeWorld(1).comms[0], FakeWorld(1).comms[0]
    with dist.use_communicator(a):
        assert dist.get_default_communicator() is a
        with dist.use_communicator(b):
            assert dist.get_default_communicator() is b
        assert dist.get_default_communicator() is a
    assert isinstance(dist.get_default_communicator(), SingleProcess)


def test_sub_communicators_only_talk_among_their_members():
    world = FakeWorld(3)
    group = world.new_group([0, 2])

    def fn(comm):
        value = np.array([10.0 ** comm.rank])
        everyone = comm.all_reduce(value)
        sub = group.get(comm.rank)
        pair = sub.all_reduce(value) if sub is not None else None
        return everyone, pair, (sub.rank, sub.world_size) if sub is not None else None

    (e0, p0, s0), (e1, p1, s1), (e2, p2, s2) = world.run(fn)
    np.testing.assert_array_equal(e0, [111.0])
    np.testing.assert_array_equal(p0, [101.0])
    np.testing.assert_array_equal(p2, [101.0])
    assert p1 is None and s1 is None
    assert s0 == (0, 2) and s2 == (1, 2)
    with pytest.raises(ValueError, match="distinct"):
        world.new_group([0, 0])


def test_single_process_communicator():
    comm = SingleProcess()
    assert (comm.rank, comm.world_size, comm.initialized) == (0, 1, False)
    a = np.arange(3.0)
    gathered = comm.all_gather(a)
    assert len(gathered) == 1 and gathered[0] is not a
    np.testing.assert_array_equal(gathered[0], a)
    total = comm.all_reduce(a)
    total += 1
    np.testing.assert_array_equal(a, [0, 1, 2])
    with pytest.raises(ValueError, match="unsupported reduce op 'prod'"):
        comm.all_reduce(a, "prod")


def test_communicators_are_handles_copy_and_deepcopy_share_them():
    comm = FakeWorld(2).comms[1]
    assert copy.copy(comm) is comm and copy.deepcopy(comm) is comm
    assert copy.deepcopy({"group": comm})["group"] is comm
    assert repr(comm) == "FakeCommunicator(rank=1, world_size=2)"
    assert isinstance(comm, Communicator) and isinstance(comm, FakeCommunicator)


def test_bad_arguments():
    with pytest.raises(ValueError, match="world_size must be a positive int"):
        FakeWorld(0)
    world = FakeWorld(2)
    with pytest.raises(ValueError, match="unsupported reduce op"):
        world.run(lambda comm: comm.all_reduce(np.zeros(1), "mean"))
    with pytest.raises(TypeError):
        Communicator()  # abstract


def test_device_arrays_pass_through_unchanged():
    """fakegpu arrays (CuPy's stand-in) are gathered and reduced as device arrays."""
    world = FakeWorld(2)

    def fn(comm):
        x = tg.tensor(np.full(3, comm.rank + 1.0), device="fakegpu")
        gathered = comm.all_gather(x.data)
        total = comm.all_reduce(x.data)
        return [tg.Tensor._make(g).device for g in gathered], tg.Tensor._make(total).numpy()

    for devices, total in world.run(fn):
        assert devices == ["fakegpu", "fakegpu"]
        np.testing.assert_array_equal(total, [3.0, 3.0, 3.0])
