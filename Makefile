# posefleet: `make demo` (set up + local demo), `make test` (set up + lint + types + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOADGEN := $(CURDIR)/build/estimate_stream_load
LOADGEN_IF_BUILT = $$([ -x $(LOADGEN) ] && echo $(LOADGEN))
# Assets (real models and data) live beside the checkout; never committed.
POSEFLEET_ASSETS ?= $(shell [ -d ../shared/assets ] && cd ../shared/assets && pwd)
export POSEFLEET_ASSETS

.PHONY: setup system-deps demo scene-demo test lint typecheck pytest proto bench bench-int8 bench-node bench-scene bench-calibration soak loadgen dashboard-screenshot test-arm64 bench-audit bench-fair-share clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (3.11+)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The Ansible tests run sshd inside network namespaces, bench-node's load generator is C++, the dashboard's
# browser test drives Chromium and the MQTT test a Mosquitto broker: install OpenSSH server, iproute2, g++,
# gRPC C++, Chromium with its chromedriver and Mosquitto when missing (as root, with apt; services are not
# started: the tests start their own on loopback). Without root the tests that need them say why.
SYSTEM_TOOLS := /usr/sbin/sshd /usr/bin/chromium /usr/bin/chromedriver /usr/sbin/mosquitto
system-deps:
	@missing=0; for tool in $(SYSTEM_TOOLS); do [ -x $$tool ] || missing=1; done; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && { [ $$missing = 1 ] || ! command -v ip >/dev/null \
			|| ! command -v g++ >/dev/null || ! pkg-config --exists grpc++ 2>/dev/null; }; then \
		guard=0; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server openssh-client iproute2 \
			g++ pkg-config libgrpc++-dev chromium chromium-driver mosquitto >/dev/null; \
		if [ $$guard = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	fi

# The dashboard screenshot in the README: a cluster streaming the sample clip, seen by headless Chromium.
dashboard-screenshot: setup system-deps
	$(BIN)/python tests/screenshot_dashboard.py bench/dashboard.png

demo: setup
	$(BIN)/posefleet demo

# The calibrated four-camera scene fused live (needs the assets); refreshes the picture of it in docs/merge.md.
scene-demo: setup
	$(BIN)/posefleet demo --scene --out demo-out/scene
	cp demo-out/scene/scene.png bench/scene.png

# The `posefleet` namespace spans proto/, common/, merge/, node/, coordinator/, clients/ and bench/ (see pyproject.toml).
SOURCE_PATH := proto:common:merge:node:coordinator:clients:bench

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	PYTHONPATH=$(SOURCE_PATH) $(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

pytest: setup system-deps loadgen
	POSEFLEET_LOADGEN=$(LOADGEN_IF_BUILT) $(BIN)/pytest

test: system-deps lint typecheck pytest

# Opt-in: a node on Debian bookworm arm64 (a Raspberry Pi's OS) under qemu-user emulation, as root; about 10
# minutes the first time (the debootstrap root is kept in $$POSEFLEET_HOME). Writes bench/arm64.md.
test-arm64: setup
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! { command -v debootstrap && command -v qemu-aarch64-static; } >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			qemu-user-static binfmt-support debootstrap >/dev/null; fi
	POSEFLEET_ARM64_REPORT=bench/arm64.md $(BIN)/pytest -m arm64 -s tests/test_arm64.py

# How fast the coordinator's audit catches a node answering plausible but wrong poses, and what it costs.
bench-audit: setup
	POSEFLEET_AUDIT_REPORT=bench/audit.md $(BIN)/pytest -s tests/test_audit.py -k quarantined

# A camera at the image size limit beside a normal camera: what the normal camera's frames still get.
bench-fair-share: setup
	POSEFLEET_FAIR_SHARE_REPORT=bench/fair-share.md $(BIN)/pytest -s tests/test_hostile.py -k huge_frames

proto: setup
	$(BIN)/python proto/generate.py

bench: setup
	$(BIN)/posefleet bench --all --markdown bench/models.md --json bench/models.json --chart bench/models.png

# What INT8 can gain on this CPU (about 4 minutes): synthetic 1x1 and depthwise convolutions, and PoseNet FP16
# against its NNCF INT8 twin, each in f32, the CPU's default precision (bf16 where it has it) and INT8.
bench-int8: setup
	$(BIN)/posefleet bench --int8-ceiling --all --markdown bench/int8-ceiling.md --json bench/int8-ceiling.json

# The C++ EstimateStream load generator for bench-node (gRPC C++ from apt: libgrpc++-dev). Optional:
# without g++ and gRPC C++, bench-node and the tests use the Python client.
loadgen: system-deps
	@if command -v g++ >/dev/null && pkg-config --exists grpc++ 2>/dev/null; then \
		$(MAKE) --no-print-directory $(LOADGEN); \
	else echo "loadgen: no g++ or gRPC C++ (libgrpc++-dev) here: bench-node uses the Python client"; fi

$(LOADGEN): clients/loadgen/estimate_stream_load.cc
	@mkdir -p $(@D)
	g++ -O2 -std=c++17 -Wall -Wextra -o $@ $< $$(pkg-config --cflags --libs grpc++)

# Live 3D quality per person on the shared lab recordings (PoseNet 0.75, hpe-0001, YOLOv8n-pose and the OpenPose
# recording against Pose2Sim's), fusion against the naive rule (a few minutes: the models run on 4 x 100 frames).
bench-scene: setup
	$(BIN)/posefleet bench-scene --markdown bench/scene-quality.md --json bench/scene-quality.json

# posefleet's own calibration of the shared rig (board, known points, people) against its Qualisys one.
bench-calibration: setup
	$(BIN)/posefleet bench-calibration --markdown bench/calibration.md --json bench/calibration.json

bench-node: setup loadgen
	POSEFLEET_LOADGEN=$(LOADGEN_IF_BUILT) $(BIN)/posefleet bench --all --node --rounds 5 --markdown bench/node.md --json bench/node.json

# About 6 minutes: 1,000,000 frames through a coordinator to instant simulated nodes (not part of `make test`).
soak: setup
	$(BIN)/posefleet bench-cluster --only soak --markdown bench/soak.md --json bench/soak.json

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build *.egg-info
