"""Opt-in download of the benchmarks' public releases (``eval/run.py --download``): each benchmark's
Hugging Face dataset, as lmms-eval and the benchmark authors publish it, into ``DATA_DIR/<name>/`` in
the layout its loader reads. ``huggingface_hub.snapshot_download`` does the work: files already there
are kept, an interrupted download resumes, ``HF_ENDPOINT`` / ``HF_TOKEN`` apply as usual. The default
everywhere else stays offline: nothing is fetched without ``--download``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class HubSource:
    repo_id: str
    allow_patterns: tuple[str, ...] | None = None  # None: the whole repository


# benchmark -> its dataset on the Hub (None: not on the Hub in the layout the loader reads; fetch it by hand)
HUB_SOURCES: dict[str, HubSource | None] = {
    "mathvision": HubSource("MathLLMs/MathVision", ("data/*.parquet",)),
    "dynamath": HubSource("kcz358/DynaMath", ("*.parquet", "data/*.parquet")),
    "wemath": HubSource("We-Math/We-Math", ("*.parquet", "*.json", "data/*.parquet")),
    "logicvista": HubSource("lscpku/LogicVista", ("*.parquet", "data/*.parquet")),
    "visulogic": HubSource("VisuLogic/VisuLogic", ("data.jsonl", "images.zip")),
    "ai2d": HubSource("lmms-lab/ai2d", ("data/*.parquet",)),
    "chartqa": HubSource("lmms-lab/ChartQA", ("data/*.parquet",)),
    "docvqa": HubSource("lmms-lab/DocVQA", ("DocVQA/validation-*.parquet",)),
    "infovqa": HubSource("lmms-lab/DocVQA", ("InfographicVQA/validation-*.parquet",)),
    "aime24": HubSource("HuggingFaceH4/aime_2024", ("data/*.parquet",)),
    "aime25": HubSource("math-ai/aime25", ("*.jsonl", "*.parquet", "data/*")),
    "hmmt25_feb": HubSource("MathArena/hmmt_feb_2025", ("data/*.parquet",)),
    "hmmt25_nov": HubSource("MathArena/hmmt_nov_2025", ("data/*.parquet",)),
    "humanevalplus": HubSource("evalplus/humanevalplus", ("data/*.parquet",)),
    "mbppplus": HubSource("evalplus/mbppplus", ("data/*.parquet",)),
    "livecodebench": HubSource("livecodebench/code_generation_lite", ("test6.jsonl",)),
    "synthetic": None,  # made locally: scripts/make_synthetic_data.py
}


class DownloadError(RuntimeError):
    """A benchmark could not be fetched (offline, unknown repository, refused access); the message says which."""


def download(name: str, data_dir: Path, progress: bool = True) -> Path:
    """Fetches benchmark ``name`` into ``data_dir/name`` (resumable); returns that folder."""
    source = HUB_SOURCES.get(name)
    target = Path(data_dir) / name
    if source is None:
        raise DownloadError(f"{name}: no Hugging Face dataset in the layout its loader reads; see `eval/run.py --list` "
                            f"for where its files come from and put them under {target}/")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    (enable_progress_bars if progress else disable_progress_bars)()
    try:
        snapshot_download(repo_id=source.repo_id, repo_type="dataset", local_dir=target,
                          allow_patterns=list(source.allow_patterns) if source.allow_patterns else None)
    except LocalEntryNotFoundError as e:  # no connection and nothing downloaded before
        raise DownloadError(f"{name}: cannot reach the Hub for {source.repo_id} (offline?), and nothing of it is in "
                            f"{target}/ yet: {str(e).splitlines()[0]}") from None
    except HfHubHTTPError as e:
        raise DownloadError(f"{name}: the Hub refused {source.repo_id}: {str(e).splitlines()[0]}") from None
    return target
