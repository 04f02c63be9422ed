"""An in-process stand-in for a multi-rank world: one thread per rank, collectives that meet at
a threading.Barrier. Tests use it to run K ranks' forward and backward concurrently without MPI:

    world = FakeWorld(3)
    outputs = world.run(lambda comm: layer_copies[comm.rank](x_shards[comm.rank]))

`run` calls fn(comm) in K threads, each with its rank's FakeCommunicator installed as that
thread's default communicator (grad mode and the module call stack are thread-local, so the
threads do not disturb each other), and returns the K results in rank order. An exception in
any rank breaks the barrier so the others stop waiting, and is re-raised in the caller.

Each collective is two barrier waits: every rank writes its contribution into its slot, waits,
reads all slots, waits again (so nobody overwrites a slot before everyone has read it). Ranks
that call different collectives, or send different shapes or dtypes, get a RuntimeError that says
so - the mistake a real MPI job would turn into a hang. `comm.calls` counts the collectives a
rank made ({"all_gather": 2, "all_reduce": 1}), `comm.log` lists them in order.
"""
import collections
import threading

from tinygrad_bn.distributed.comm import Communicator, _check_op, use_communicator


class FakeWorld:
    """K simulated ranks in one process. `world.comms[r]` is rank r's communicator."""

    def __init__(self, world_size, timeout=60.0):
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"FakeWorld: world_size must be a positive int, got {world_size!r}")
        self.world_size = world_size
        self.timeout = timeout
        self._barrier = threading.Barrier(world_size, timeout=timeout)
        self._slots = [None] * world_size
        self.comms = [FakeCommunicator(self, rank) for rank in range(world_size)]

    def new_group(self, ranks):
        """A sub-communicator over `ranks` (like torch.distributed.new_group): a dict mapping
        each member's rank in this world to its communicator in the new group (whose rank is
        the member's position in `ranks`)."""
        ranks = list(ranks)
        if len(set(ranks)) != len(ranks) or not all(0 <= r < self.world_size for r in ranks):
            raise ValueError(f"FakeWorld.new_group: ranks must be distinct and in [0, "
                             f"{self.world_size}), got {ranks}")
        sub = FakeWorld(len(ranks), self.timeout)
        return {r: sub.comms[i] for i, r in enumerate(ranks)}

    def run(self, fn, comms=None):
        """fn(comm) on every rank, concurrently; the results in rank order.

        `comms` (default: this world's) are the communicators handed to fn, one per thread; each
        is also installed as its thread's default communicator."""
        comms = self.comms if comms is None else list(comms)
        results = [None] * len(comms)
        errors = [None] * len(comms)

        def worker(i, comm):
            try:
                with use_communicator(comm):
                    results[i] = fn(comm)
            except BaseException as exc:  # noqa: B902 - re-raised in the caller below
                errors[i] = exc
                for c in comms:  # wake the ranks waiting for this one
                    c.world._barrier.abort()

        threads = [threading.Thread(target=worker, args=(i, c), name=f"fake-rank-{c.rank}")
                   for i, c in enumerate(comms)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for c in comms:
            c.world._barrier.reset()  # usable again after an aborted run
        # the first *cause*: a rank that failed on its own, not one woken by the broken barrier
        primary = [e for e in errors if e is not None and not isinstance(e, _PeerFailed)]
        failed = primary or [e for e in errors if e is not None]
        if failed:
            raise failed[0]
        return results


class _PeerFailed(RuntimeError):
    """A collective that could not complete because another rank failed or never joined."""


class FakeCommunicator(Communicator):
    """Rank `rank` of a FakeWorld."""

    def __init__(self, world, rank):
        self.world = world
        self._rank = rank
        self.calls = collections.Counter()
        self.log = []

    @property
    def rank(self):
        return self._rank

    @property
    def world_size(self):
        return self.world.world_size

    def reset_counts(self):
        self.calls.clear()
        self.log.clear()

    def _wait(self, what):
        try:
            self.world._barrier.wait()
        except threading.BrokenBarrierError:
            raise _PeerFailed(
                f"FakeCommunicator rank {self.rank}: {what} did not complete: another rank failed "
                f"or never joined it within {self.world.timeout:g} s (every rank must call the "
                f"same collectives in the same order)") from None

    def _exchange(self, kind, array, op=None):
        self.calls[kind] += 1
        self.log.append((kind, tuple(array.shape)))
        what = f"{kind} #{self.calls[kind]}"
        if op is not None:
            kind = f"{kind}({op})"
        world = self.world
        world._slots[self._rank] = (kind, tuple(array.shape), str(array.dtype), array.copy())
        self._wait(what)
        entries = list(world._slots)
        self._wait(what)
        first = entries[0]
        for r, entry in enumerate(entries):
            if entry[:3] != first[:3]:
                raise RuntimeError(
                    f"FakeCommunicator: mismatched collectives: rank 0 called {first[0]} with shape "
                    f"{list(first[1])} {first[2]}, rank {r} called {entry[0]} with shape "
                    f"{list(entry[1])} {entry[2]}")
        # every rank gets its own copies: one rank's in-place edits must not reach the others
        return [entry[3].copy() for entry in entries]

    def all_gather(self, array):
        return self._exchange("all_gather", array)

    def all_reduce(self, array, op="sum"):
        _check_op(op, "FakeCommunicator.all_reduce")
        parts = self._exchange("all_reduce", array, op)
        result = parts[0]  # summed in rank order, so bit-identical on every rank
        if op == "sum":
            for p in parts[1:]:
                result += p
        else:
            from tinygrad_bn import backend
            xp = backend.xp_of(array)
            for p in parts[1:]:
                result = (xp.maximum if op == "max" else xp.minimum)(result, p)
        return result
