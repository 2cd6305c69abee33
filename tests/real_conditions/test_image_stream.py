"""Resident memory stays within the prompt cache's byte budget over a stream of distinct 1280x720 images.

Each image, sized by qwen-vl-utils' default budget for Qwen2-VL (1288x728), is 4,784 float32 patches of 1,176
values: 22.5 MB. With the count bound alone (4,096 entries) the cache would hold ~90 GB by the end of 4,000 images;
with the default train.prompt_cache_mb it holds 2 GiB at most. The test streams the images through the student's
encoded-prompt cache (as ``StepPrompts`` does) with a 256 MiB budget and samples the process's RSS.
The default run streams 600 images; the test marked slow streams 2,000 (``make test-real``).
"""

from __future__ import annotations

import gc

import pytest
from rollout_memory import rss

from uniopd_mm.config import ModelConfig
from uniopd_mm.data import parse_record
from uniopd_mm.models import load_processor

BUDGET = 256 * 2**20


def stream(real_dir, tmp_path, n_images: int) -> None:
    from PIL import Image
    from tqdm import tqdm

    proc = load_processor(ModelConfig(path=str(real_dir / "qwen2_vl-real"), family="qwen2_vl"))  # default budgets
    proc.keep_media = False  # as the trainer sets it for an HF rollout
    cache = proc.prompt_cache(4096, BUDGET)
    image = tmp_path / "frame.png"
    gc.collect()
    start, peak, per_image = rss(), 0, 0
    for i in tqdm(range(n_images), desc="image stream", mininterval=5):
        # a distinct 1280x720 image each time: one file rewritten, so the disk holds one
        Image.new("RGB", (1280, 720), (i % 251, (i // 251) % 251, 17)).save(image)
        sample = parse_record({"id": f"img{i}", "domain": "x", "answer": "1", "messages": [{"role": "user", "content": [
            {"type": "image", "image": str(image)}, {"type": "text", "text": "How many shapes?"}]}]},
            str(tmp_path / "stream.jsonl"), i + 1)
        prompt = cache(sample)
        per_image = prompt.features["pixel_values"].numel() * 4
        del prompt
        peak = max(peak, rss() - start)
    unbounded = n_images * per_image
    print(f"{n_images} images of {per_image / 2**20:.1f} MiB: cache {cache.nbytes / 2**20:.0f} MiB in {len(cache)} "
          f"entries, RSS grew {peak / 2**20:.0f} MiB at most (budget {BUDGET / 2**20:.0f} MiB; unbounded: "
          f"{unbounded / 2**20:.0f} MiB)")
    assert cache.nbytes <= BUDGET and len(cache) == BUDGET // per_image
    # the budget plus one image being encoded (and its intermediate copies), well below the unbounded total
    assert peak < BUDGET + 6 * per_image + 64 * 2**20
    assert peak < unbounded / 4


def test_resident_memory_stays_within_the_cache_budget(real_dir, tmp_path):
    stream(real_dir, tmp_path, 600)


@pytest.mark.slow
def test_a_stream_of_two_thousand_images(real_dir, tmp_path):
    """The same over 2,000 images (about a minute here): ``make test-real``."""
    stream(real_dir, tmp_path, 2000)
