"""The trainers' loop on accelerate (specdec.training.optim): on one CPU process it takes the
steps the hand-written loop it replaced took; on two processes (gloo, `accelerate launch`) at the
same effective batch it takes the steps one process takes with gradient accumulation; and a run
stopped midway resumes to the weights of a run never stopped, bit for bit."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from parallel_training import train

# Per-step losses of the hand-written loop (specdec/training/optim.py and checkpoint.py at commit
# 5ae36aa, before accelerate) on parallel_training.data()'s first 20 micro-batches, one per step:
# recorded by running that commit's optimize() with the same target, data, seed and learning rate.
HAND_WRITTEN = {
    "eagle": [5.2386088371276855, 5.139448165893555, 4.924975395202637, 5.099555492401123, 4.9973649978637695,
              4.551532745361328, 4.901246547698975, 5.060215473175049, 4.709569454193115, 4.654420375823975,
              4.9910478591918945, 4.954524993896484, 4.832553863525391, 4.746694087982178, 4.908664703369141,
              4.997271537780762, 4.948220252990723, 4.766360759735107, 4.986985206604004, 4.830941677093506],
    "draft": [6.045902729034424, 6.062126636505127, 6.384332656860352, 5.67392110824585, 6.05440616607666,
              5.465672492980957, 6.212684631347656, 5.371581077575684, 6.7006025314331055, 6.220893383026123,
              5.507040023803711, 6.493285179138184, 6.205097675323486, 6.399583339691162, 6.467399597167969,
              5.807598114013672, 5.735640525817871, 6.1505560874938965, 6.605623722076416, 5.998351573944092],
}


@pytest.mark.parametrize("kind", ["eagle", "draft"])
def test_one_process_takes_the_hand_written_loop_s_steps(kind, tmp_path):
    _, losses, _ = train(kind, 20, 1, tmp_path / "checkpoint")
    assert len(losses) == 20
    assert max(abs(a - b) for a, b in zip(losses, HAND_WRITTEN[kind])) < 1e-5


def test_two_processes_take_one_process_s_steps_at_the_same_effective_batch(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPUs: two gloo processes, each one
    micro-batch per step, against one process accumulating two (40 micro-batches, 20 steps)."""
    out = tmp_path / "eagle.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                    str(Path(__file__).with_name("parallel_training.py")), "eagle", str(out)],
                   env=env, check=True, capture_output=True, timeout=300)
    parallel = json.loads(out.read_text())
    weights, losses, _ = train("eagle", 40, 2, tmp_path / "checkpoint")
    assert parallel["processes"] == 2 and len(parallel["losses"]) == len(losses) == 20
    assert max(abs(a - b) for a, b in zip(parallel["losses"], losses)) < 1e-4
    theirs = torch.load(out.with_suffix(".pt"), weights_only=True)
    assert all(torch.allclose(theirs[k], weights[k], atol=1e-5) for k in weights)


def test_a_run_stopped_midway_resumes_to_the_same_weights_bit_for_bit(tmp_path):
    whole, losses, _ = train("eagle", 20, 2, tmp_path / "whole", checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):  # stopped in step 8, after the checkpoint of step 6
        train("eagle", 20, 2, tmp_path / "stopped", checkpoint_every=3, stop_at=15)
    resumed, rest, _ = train("eagle", 20, 2, tmp_path / "stopped", checkpoint_every=3)
    assert len(rest) == 10 - 6 and rest == losses[6:]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)
