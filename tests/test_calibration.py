"""The trainer's advantage stage: balancing changes the loss mask, the shift reaches the advantages,
and global scopes give the same result on 2 processes as on 1."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from uniopd_mm.algo.margin import group_margins, trajectory_returns
from uniopd_mm.config import load_config
from uniopd_mm.trainer import Trainer
from uniopd_mm.training.base import TrainingEngine
from uniopd_mm.training.deepspeed_engine import DeepSpeedEngine


def _cfg(overrides):
    base = {"student": {"path": "x", "family": "text"}, "teacher": {"path": "y", "family": "text"},
            "data": {"train_path": "z"}}
    return load_config(None, overrides, base=base)


class _Local(TrainingEngine):
    rank, world_size = 0, 1


class _Dist:
    """The DeepSpeed engine's collectives on a plain gloo group."""

    all_gather = DeepSpeedEngine.all_gather
    all_reduce = DeepSpeedEngine.all_reduce

    def __init__(self, rank, world):
        self.rank, self.world_size = rank, world
        self.comm_device = torch.device("cpu")  # gloo


def _bare_trainer(cfg, engine, rank=0, world=1):
    t = Trainer.__new__(Trainer)
    t.cfg, t.engine, t.rank, t.world, t.step = cfg, engine, rank, world, 3
    return t


def _inputs(seed=0, b=16, width=5):
    g = torch.Generator().manual_seed(seed)
    teacher_logprobs = -torch.rand(b, width, generator=g) * 2
    old_logprobs = -torch.rand(b, width, generator=g) * 2
    mask = torch.ones(b, width)
    correct = torch.tensor([1, 1, 1, 0] * (b // 4))
    group = torch.arange(b // 4).repeat_interleave(4)
    return teacher_logprobs, old_logprobs, mask, correct, group


def test_balancing_and_shift_in_the_trainer():
    teacher_logprobs, old_logprobs, mask, correct, group = _inputs()
    plain = _bare_trainer(_cfg([]), _Local())
    adv0, mask0, m0 = plain.calibrate(teacher_logprobs, old_logprobs, mask, correct, group)
    assert torch.equal(mask0, mask) and "margin/inversion_rate" in m0
    uni = _bare_trainer(_cfg(["algo.preset=uniopd_text"]), _Local())
    adv1, mask1, m1 = uni.calibrate(teacher_logprobs, old_logprobs, mask, correct, group)
    assert not torch.equal(mask1, mask)                       # balancing dropped rollouts
    assert m1["balance/dropped"] == 8.0                        # 3 correct : 1 incorrect -> 1 : 1 in 4 groups
    # every mixed group now has a mean margin of at least delta = 0.4 (those below were lifted to exactly 0.4)
    kept = torch.where(mask1.sum(-1) > 0, correct, torch.full_like(correct, -1))
    _, before, mixed = group_margins(trajectory_returns(adv0, mask1), kept, group, "mean")
    _, after, _ = group_margins(trajectory_returns(adv1, mask1), kept, group, "mean")
    assert mixed.all()
    for b, a in zip(before.tolist(), after.tolist()):
        assert a == pytest.approx(max(b, 0.4), abs=1e-5)


def _worker(rank, world, port, out_path, overrides):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    import torch.distributed as dist

    dist.init_process_group("gloo", rank=rank, world_size=world)
    teacher_logprobs, old_logprobs, mask, correct, group = _inputs(b=24)
    rows = slice(rank * 12, (rank + 1) * 12)  # prompts (groups of 4) never straddle ranks
    t = _bare_trainer(_cfg(overrides), _Dist(rank, world), rank, world)
    advantages, lmask, metrics = t.calibrate(teacher_logprobs[rows], old_logprobs[rows], mask[rows], correct[rows], group[rows])
    parts = [torch.zeros_like(advantages) for _ in range(world)]
    dist.all_gather(parts, advantages)
    mparts = [torch.zeros_like(lmask) for _ in range(world)]
    dist.all_gather(mparts, lmask)
    if rank == 0:
        torch.save({"advantages": torch.cat(parts), "mask": torch.cat(mparts), "metrics": metrics}, out_path)
    dist.destroy_process_group()


@pytest.mark.parametrize("overrides", [
    ["algo.margin.shift=true", "algo.margin.scope=global", "algo.margin.delta=0.3"],
    ["algo.balance.enabled=true", "algo.balance.scope=global", "algo.margin.shift=true", "algo.margin.scope=global"],
    ["algo.margin.mask=true", "algo.margin.scope=global", "algo.margin.delta=0.5"],
    ["algo.balance.enabled=true", "algo.balance.scope=group", "algo.margin.shift=true", "algo.margin.delta=0.3"],
])
def test_global_scope_two_processes_equal_one(tmp_path, overrides):
    teacher_logprobs, old_logprobs, mask, correct, group = _inputs(b=24)
    one = _bare_trainer(_cfg(overrides), _Local())
    adv1, mask1, met1 = one.calibrate(teacher_logprobs, old_logprobs, mask, correct, group)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(2, port, str(out), overrides), nprocs=2, join=True)
    two = torch.load(out)
    assert torch.allclose(two["advantages"], adv1, atol=1e-6)
    assert torch.equal(two["mask"], mask1)
    for k, v in met1.items():
        if k.startswith(("margin", "balance")):
            assert two["metrics"][k] == pytest.approx(v, abs=1e-6), k


def test_per_teacher_inversion_rate_is_measured_before_calibration():
    """With two teachers, teacher/<name>/inversion_rate is order_consistency on that teacher's rollouts, from the
    returns before margin calibration (where margin/inversion_rate is measured), not after it."""
    from uniopd_mm.algo.margin import order_consistency
    from uniopd_mm.algo.opd import opd_advantages

    teacher_logprobs, old_logprobs, mask, correct, group = _inputs()
    t = _bare_trainer(_cfg(["algo.margin.shift=true", "algo.margin.delta=2.0"]), _Local())
    t.teachers = {"a": None, "b": None}
    ids = (group % 2).long()  # groups 0, 2 -> teacher a; 1, 3 -> teacher b
    _, _, metrics = t.calibrate(teacher_logprobs, old_logprobs, mask, correct, group, ids)
    returns = trajectory_returns(opd_advantages(teacher_logprobs, old_logprobs, mask), mask)
    for k, name in enumerate(["a", "b"]):
        rows = ids == k
        expected = order_consistency(returns[rows], correct[rows], group[rows])["inversion_rate"]
        assert metrics[f"teacher/{name}/inversion_rate"] == pytest.approx(expected)
    assert metrics["margin_after/inversion_rate"] == 0.0 < metrics["margin/inversion_rate"]  # delta 2 fixes every pair
