# CLAP for ROS 2: one entry point per job. `make help` lists them.
SHELL := /bin/bash
ROOT := $(abspath .)
VENV ?= $(ROOT)/.venv
ENV := source $(ROOT)/scripts/env.sh
SETUP_STAMP := $(VENV)/.clap-setup
SETUP_INPUTS := scripts/setup.sh scripts/ros_env.sh scripts/fix_ros_wheel_cmake.py requirements/python.txt requirements/no-deps.txt requirements/ros-wheels.txt \
	$(shell find src -name package.xml -o -name setup.py -o -name setup.cfg -o -name CMakeLists.txt \
	  -o -name '*.msg' -o -name '*.srv' -o -name '*.action' 2>/dev/null)
PYTEST_ARGS ?=

.PHONY: help setup build test lint demo bench clean

help:
	@echo "make setup   venv + ROS 2 Jazzy (apt or PyPI wheels) + pinned deps + colcon build"
	@echo "make demo    run the CLAP pipeline end to end on the embedded default (CPU)"
	@echo "make test    run every test, the lint included (sets up first when needed)"
	@echo "make lint    flake8 + pep257 over src/ bench/ scripts/ launch/ test/ (the settings of .flake8)"
	@echo "make bench   run the benchmarks under bench/ (figures go to bench/RESULTS.md by hand)"
	@echo "make clean   remove build/, install/, log/ (keeps .venv)"

setup: $(SETUP_STAMP)

$(SETUP_STAMP): $(SETUP_INPUTS)
	bash scripts/setup.sh
	@touch $@

build: setup
	$(ENV) && colcon build --symlink-install --base-paths src --cmake-args -DBUILD_TESTING=OFF \
	  --event-handlers console_direct- summary+

test: setup
	$(ENV) && bash scripts/run_tests.sh $(PYTEST_ARGS)

lint: setup
	$(ENV) && python scripts/lint.py

demo: setup
	$(ENV) && python scripts/demo.py $(DEMO_ARGS)

# Every benchmark, in dependency order (the alignment bench uses the per-arm Act-VAE the PSNR run trains).
# The figures and the commands behind them are collected in bench/RESULTS.md. About 2 h on a
# 2-core CPU, most of it the Act-VAE and VD-VAE training runs.
# bench/closed_loop.py (the closed-loop ladder, ~1.5 h) and bench/human_transfer.py (human videos of an
# unseen variant, ~2 h) run on their own: see bench/RESULTS.md.
bench: setup
	$(ENV) && set -e \
	  && python bench/convert.py \
	  && python bench/frame_cache.py \
	  && python bench/latency.py --repeats 30 \
	  && python bench/node.py --seconds 15 \
	  && python bench/sim_render.py \
	  && python bench/act_vae_psnr.py \
	  && python bench/act_vae_sim_psnr.py --arms 2 --actions relative --steps 4000 --out bench/out/act_vae_arm_rel \
	  && python bench/alignment.py --act-vae bench/out/act_vae_arm_rel/nq16_k256/act_vae \
	  && OMP_NUM_THREADS=1 python bench/multiprocess.py \
	  && python bench/memory_plan.py --json bench/out/memory_plan.json

clean:
	rm -rf build install log
